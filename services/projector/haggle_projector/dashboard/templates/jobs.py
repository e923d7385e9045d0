"""The jobs list and the job page (one row per provider, best offer on top), rendered from `job_doc`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ...stores.base import JobSummary
from .cells import COLUMNS, JOB_COLUMNS, job_summary_view, job_view, money, row_view
from .layout import attrs, e, page

JOBS_FEED = "/ui/events"


def job_url(job_id: str) -> str:
    return f"/ui/jobs/{quote(job_id)}"


def call_url(job_id: str, provider_id: str) -> str:
    return f"/ui/jobs/{quote(job_id)}/calls/{quote(provider_id)}"


def job_list_row(j: JobSummary) -> str:
    view = job_summary_view(j)
    cells = []
    for field, heading in JOB_COLUMNS:
        if field == "job":
            inner = (f'<a href="{e(job_url(j.job_id))}">{e(j.problem)}</a>'
                     f'<small class="id">{e(j.job_id)}</small>')
        else:
            inner = e(view["cells"][field])
        cells.append(f'<td data-field="{field}" data-label="{e(heading)}">{inner}</td>')
    row_attrs = attrs({"data-job-id": j.job_id, "data-state": view["state"], "data-created": view["created"]})
    return f"<tr{row_attrs}>{''.join(cells)}</tr>"


def jobs_page(jobs: list[JobSummary], *, signed_in: bool) -> str:
    # The table is always there (empty when there are no jobs) so the live feed can add the first job to it.
    empty = "" if jobs else " hidden"
    heads = "".join(f'<th data-field="{f}">{e(h)}</th>' for f, h in JOB_COLUMNS)
    body = f"""<div class="titlebar"><h1>Jobs</h1><a class="button" href="/ui/new">New job</a></div>
<p class="meta"><span id="live" class="live" data-state="connecting">connecting…</span></p>
<p id="no-jobs" class="notice"{empty}>No jobs yet. <a href="/ui/new">Start one</a> and watch the calls here as they
happen.</p>
<table id="jobs" class="jobs cards">
<thead><tr>{heads}</tr></thead>
<tbody>
{chr(10).join(job_list_row(j) for j in jobs)}
</tbody>
</table>"""
    main = {"class": "jobs-list", "data-page": "jobs", "data-feed": JOBS_FEED}
    return page("Jobs", body, signed_in=signed_in, main=main)


def provider_row(job_id: str, doc: dict[str, Any], *, best_id: str | None) -> str:
    view = row_view(doc)
    cells = []
    for field, heading in COLUMNS:
        if field == "name":
            inner = f'<a href="{e(call_url(job_id, doc["id"]))}">{e(doc["service_provider"])}</a>'
        else:
            inner = e(view["cells"][field])
        cells.append(f'<td data-field="{field}" data-label="{e(heading)}">{inner}</td>')
    row_attrs = attrs({
        "data-provider-id": doc["id"],
        "data-status": view["status"],
        "data-outcome": view["outcome"],
        "data-terminal": "true" if view["terminal"] else "false",
        "class": "best" if doc["id"] == best_id else None,
    })
    return f"<tr{row_attrs}>{''.join(cells)}</tr>"


def best_banner(best: dict[str, Any] | None) -> str:
    hidden = " hidden" if best is None else ""
    best = best or {"name": "", "price": "", "saving": ""}
    return (
        f'<section id="best" class="best-offer"{hidden} aria-live="polite">'
        f'<span class="label">Best offer</span> '
        f'<strong data-best="name">{e(best["name"])}</strong> at '
        f'<strong data-best="price">{e(best["price"])}</strong> '
        f'<span data-best="saving" class="saving">{e(best["saving"])}</span></section>'
    )


def cost_line(c: dict[str, str]) -> str:
    return (f'<p id="job-cost" class="cost-line">Cost <strong data-cost="total">{e(c["total"])}</strong> '
            f'(<span data-cost="calls">{e(c["calls"])}</span>) · per agreed dollar saved '
            f'<strong data-cost="per_dollar_saved">{e(c["per_dollar_saved"])}</strong></p>')


def job_actions(job_id: str, status: str) -> str:
    """The operator's actions on a job. Each is a plain form (works without the script); more buttons (Book)
    go into the same bar. Cancel is offered while calls may still be placed."""
    cancel = (
        f'<form method="post" action="{e(job_url(job_id))}/cancel" class="cancel" '
        f'data-confirm="Cancel this job? Calls not yet finished are stopped.">'
        f'<button type="submit" id="cancel-job" class="danger">Cancel job</button></form>'
        if status == "running" else ""
    )
    return (f'<div id="job-actions" class="actions">{cancel}'
            f'<a id="export-csv" class="button secondary" href="/jobs/{e(quote(job_id))}/results.csv" download>'
            f'Export CSV</a></div>')


BOOKING_LABELS = {"requested": "Booking requested: calling back to confirm", "confirmed": "Booked",
                  "failed": "Booking failed"}


def booking_section(doc: dict[str, Any], *, error: str | None = None) -> str:
    """The booking state and, when the job can be booked, the Book button (the best offer, inside the windows)."""
    job_id, status = doc["job_id"], doc.get("booking_status")
    parts = ['<section id="booking" class="booking" aria-live="polite">']
    if status:
        who = next((p["service_provider"] for p in doc["providers"] if p["id"] == doc.get("booking_provider_id")), "")
        when = f" for {e(doc['appointment'])}" if doc.get("appointment") else ""
        parts.append(f'<p data-booking-status="{e(status)}"><strong>{e(BOOKING_LABELS.get(status, status))}</strong>'
                     f" {e(who)}{when}</p>")
    if error:
        parts.append(f'<div class="errors" role="alert"><p>{e(error)}</p></div>')
    best = doc.get("best_offer")
    if best and doc.get("job_completed") and status in (None, "failed"):
        parts.append(
            f'<form method="post" action="{e(job_url(job_id))}/book" class="form narrow" id="book">'
            f'<label for="windows">When can they come? One window per line (empty: any time)</label>'
            f'<textarea id="windows" name="windows" rows="2" placeholder="Sat Jan 10, 8am-12pm"></textarea>'
            f'<button type="submit">Book {e(best["service_provider"])} at {e(money(best["price"]))}</button></form>')
    parts.append("</section>")
    return "".join(parts)


def job_page(doc: dict[str, Any], *, signed_in: bool, booking_error: str | None = None) -> str:
    job_id = doc["job_id"]
    summary = job_view(doc)
    best = summary["best"]
    best_id = best["provider_id"] if best else None
    heads = "".join(f'<th data-field="{f}">{e(h)}</th>' for f, h in COLUMNS)
    rows = "\n".join(provider_row(job_id, p, best_id=best_id) for p in doc["providers"])
    body = f"""<p class="crumbs"><a href="/">Jobs</a> / <span class="id">{e(job_id)}</span></p>
<h1>{e(doc["problem"])}</h1>
<p class="meta">ZIP {e(doc["zip_code"])} · target {e(money(doc["max_price"]))} ·
<span id="job-status" class="job-status" data-status="{e(summary["status"])}">{e(summary["label"])}</span>
<span id="live" class="live" data-state="connecting">connecting…</span></p>
{best_banner(best)}
{cost_line(summary["cost"])}
{job_actions(job_id, summary["status"])}
{booking_section(doc, error=booking_error)}
<table id="providers" class="providers cards">
<thead><tr>{heads}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
<section class="activity-wrap"><h2>Latest events</h2>
<ol id="activity" class="activity" data-limit="12"></ol></section>"""
    main = {
        "class": "job",
        "data-page": "job",
        "data-job-id": job_id,
        "data-feed": f"{job_url(job_id)}/events",
    }
    return page(doc["problem"] or job_id, body, signed_in=signed_in, main=main)
