"""How a provider row reads on the page: one formatter used for the server-rendered HTML and the live feed.

The live feed sends these already-formatted strings, so the browser only sets `textContent` and never
re-implements money, duration or status wording (one place decides how a row reads).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ...stores.base import JobSummary

STATUS_LABELS = {
    "queued": "Queued",
    "dialing": "Dialing",
    "in_progress": "On the call",
    "completed": "Completed",
    "failed": "Finished",
}
OUTCOME_LABELS = {
    "agreed": "Agreed",
    "no_agreement": "No agreement",
    "no_answer": "No answer",
    "busy": "Busy",
    "voicemail": "Voicemail",
    "declined": "Declined",
    "failed": "Call failed",
    "cancelled": "Cancelled",
}
ROLE_LABELS = {"assistant": "Haggle", "user": "Provider"}
DASH = "–"
LATEST_CHARS = 140

# The columns of the job page's provider table, in order: (field, heading). "name" is the link cell.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Provider"),
    ("status", "Status"),
    ("outcome", "Outcome"),
    ("attempts", "Attempts"),
    ("round", "Round"),
    ("initial_quote", "First quote"),
    ("negotiated_price", "Negotiated"),
    ("duration", "Duration"),
    ("cost", "Cost"),
    ("latest", "Latest words"),
)


def money(x: float | None) -> str:
    if x is None:
        return DASH
    return f"${x:,.0f}" if float(x).is_integer() else f"${x:,.2f}"


def cost(x: float | None, currency: str = "USD") -> str:
    """A call cost: cents matter here, and fractions of them add up over many calls."""
    if x is None:
        return DASH
    sign = "$" if currency in ("USD", "") else f"{currency} "
    return f"{sign}{x:,.4f}"


def cost_detail(doc: dict[str, Any]) -> str:
    """Each priced attempt's two parts: Twilio's charge and the realtime model's minutes."""
    parts = []
    for c in doc.get("costs") or []:
        twilio = cost(c["twilio_price"], c["currency"]) if c["twilio_price"] is not None else "not reported"
        parts.append(f"attempt {c['attempt']}: Twilio {twilio} + realtime {cost(c['realtime_cost'], c['currency'])}"
                     f" = {cost(c['total'], c['currency'])}")
    return " · ".join(parts) or DASH


def duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    return f"{whole // 60}m {whole % 60:02d}s"


def clock(when: datetime | str | None) -> str:
    """HH:MM:SS (UTC), the timeline's time column."""
    if when is None:
        return ""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    return when.strftime("%H:%M:%S")


def offset(delta: timedelta) -> str:
    """M:SS into a call (a negative delta, clocks of two machines disagreeing, reads as 0:00)."""
    whole = max(0, int(delta.total_seconds()))
    return f"{whole // 60}:{whole % 60:02d}"


def short(text: str, limit: int = LATEST_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def status_text(doc: dict[str, Any]) -> str:
    status = doc.get("call_status") or "queued"
    label = STATUS_LABELS.get(status, status)
    if status == "queued" and doc.get("retry_at"):
        return f"Retry at {clock(doc['retry_at'])} UTC"
    if status == "queued" and doc.get("outcome"):
        return "Retry pending"  # the last attempt went unanswered and another is allowed
    return label


def outcome_text(doc: dict[str, Any]) -> str:
    outcome = doc.get("outcome")
    if not outcome:
        return DASH
    return OUTCOME_LABELS.get(outcome, outcome.replace("_", " "))


def latest_text(doc: dict[str, Any]) -> str:
    transcript = doc.get("transcript") or []
    if not transcript:
        return DASH
    last = transcript[-1]
    who = "Haggle" if last["role"] == "assistant" else "Provider"
    return short(f"{who}: {last['text']}")


def terms_text(doc: dict[str, Any]) -> str:
    parts = [str(p).replace("_", " ") for p in (doc.get("price_type"), doc.get("conditions")) if p and p != "unknown"]
    if doc.get("visit_fee"):
        parts.append(f"plus a {money(doc['visit_fee'])} call-out fee ({money(doc.get('all_in'))} all-in)")
    if doc.get("includes_parts") is not None:
        parts.append("parts included" if doc["includes_parts"] else "parts extra")
    if doc.get("warranty"):
        parts.append(f"warranty {doc['warranty']}")
    if doc.get("earliest_availability"):
        parts.append(f"earliest {doc['earliest_availability']}")
    return " · ".join(parts) or DASH


def note_text(doc: dict[str, Any]) -> str:
    """Why a call ended the way it did, when there is something to say."""
    ended = doc.get("end_reason")
    parts = [doc.get("failure_reason"), ended and ended != "end_call" and f"ended: {ended}",
             doc.get("disagreement") and f"extractors disagreed: {doc['disagreement']}"]
    return " · ".join(str(p).replace("_", " ") for p in parts if p) or DASH


def row_cells(doc: dict[str, Any]) -> dict[str, str]:
    """Display text per field for one `provider_doc`."""
    return {
        "status": status_text(doc),
        "outcome": outcome_text(doc),
        "attempts": f"{doc.get('attempts') or 0}/{doc.get('max_attempts') or '?'}",
        "round": str(doc.get("round") or 1),
        "initial_quote": money(doc.get("initial_quote")),
        "negotiated_price": money(doc.get("negotiated_price")),
        "duration": duration(doc.get("duration_s")),
        "cost": cost(doc.get("cost")),
        "cost_detail": cost_detail(doc),
        "latest": latest_text(doc),
        "terms": terms_text(doc),
        "note": note_text(doc),
    }


def row_view(doc: dict[str, Any]) -> dict[str, Any]:
    """A row as the live feed sends it: state keys for styling, formatted cells for display."""
    return {
        "id": doc["id"],
        "name": doc["service_provider"],
        "status": doc.get("call_status") or "queued",
        "outcome": doc.get("outcome") or "",
        "terminal": doc.get("call_status") in ("completed", "failed"),
        "cells": row_cells(doc),
    }


def best_view(best: dict[str, Any] | None) -> dict[str, Any] | None:
    """The best offer of a `job_doc`, worded for the banner."""
    if not best:
        return None
    saving = best.get("saving")
    if saving:
        saving_text = f"saves {money(saving)} on their first quote of {money(best.get('initial_quote'))}"
    else:
        saving_text = "no saving on their first quote" if best.get("initial_quote") is not None else ""
    return {
        "provider_id": best["provider_id"],
        "name": best["service_provider"],
        "price": money(best.get("price")),
        "saving": saving_text,
    }


def job_view(doc: dict[str, Any]) -> dict[str, Any]:
    """The job-level part of a `job_doc`: status line and best offer."""
    providers = doc.get("providers") or []
    done = sum(1 for p in providers if p.get("call_status") in ("completed", "failed"))
    agreed = sum(1 for p in providers if p.get("outcome") == "agreed")
    status = doc.get("status") or "running"
    if status == "completed":
        label = f"Completed: {agreed} of {len(providers)} agreed"
    else:
        label = f"Running: {done} of {len(providers)} calls finished"
    return {"status": status, "label": label, "best": best_view(doc.get("best_offer")), "cost": cost_view(doc)}


def cost_view(doc: dict[str, Any]) -> dict[str, str]:
    """The job's cost line: the total of every priced call, and what each agreed dollar saved cost."""
    c = doc.get("cost") or {}
    currency = c.get("currency") or "USD"
    total = cost(c.get("total"), currency) if c.get("calls_priced") else DASH
    per = c.get("per_dollar_saved")
    return {
        "total": total,
        "calls": f"{c.get('calls_priced') or 0} call(s) priced",
        "per_dollar_saved": cost(per, currency) if per is not None else DASH,
    }


# The columns of the jobs list, in order: (field, heading). "job" is the link cell.
JOB_COLUMNS: tuple[tuple[str, str], ...] = (
    ("job", "Job"),
    ("zip_code", "ZIP"),
    ("done", "Calls done"),
    ("agreed", "Agreed"),
    ("best_price", "Best price"),
    ("max_price", "Target"),
    ("started", "Started"),
)


def job_summary_view(j: JobSummary) -> dict[str, Any]:
    """One jobs-list row, for the server-rendered list and the live jobs feed alike."""
    started = j.created_at.strftime("%Y-%m-%d %H:%M") + " UTC" if j.created_at else DASH
    return {
        "job_id": j.job_id,
        "problem": j.problem,
        "state": "completed" if j.providers and j.terminal == j.providers else "running",
        "created": j.created_at.isoformat() if j.created_at else "",
        "cells": {
            "zip_code": j.zip_code,
            "done": f"{j.terminal}/{j.providers}",
            "agreed": str(j.agreed),
            "best_price": money(j.best_price),
            "max_price": money(j.max_price),
            "started": started,
        },
    }
