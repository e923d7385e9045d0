"""The call view: what was agreed, the conversation as a chat, and the call's event timeline (the audit view)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .cells import duration, row_view
from .jobs import call_url, job_url
from .layout import attrs, e, page

FACTS: tuple[tuple[str, str], ...] = (
    ("status", "Status"),
    ("outcome", "Outcome"),
    ("attempts", "Attempts"),
    ("initial_quote", "First quote"),
    ("negotiated_price", "Negotiated"),
    ("terms", "Terms"),
    ("duration", "Duration"),
    ("cost", "Cost"),
    ("cost_detail", "Cost per attempt"),
    ("note", "Notes"),
)


def bubble(u: dict[str, Any], provider_name: str) -> str:
    """One utterance. `u` is the feed's utterance shape: id, attempt, seq, role, text, interrupted, at, offset."""
    side = "agent" if u["role"] == "assistant" else "provider"
    who = "Haggle" if side == "agent" else provider_name
    cut = ' <span class="cut" title="interrupted">(interrupted)</span>' if u.get("interrupted") else ""
    when = (f' <time class="offset"{attrs({"title": u["at"] and u["at"] + " UTC"})}>{e(u["offset"] or u["at"])}</time>'
            if u.get("at") else "")
    return (
        f'<div class="msg {side}"{attrs({"data-uid": u["id"], "data-attempt": u["attempt"], "data-seq": u["seq"]})}>'
        f'<span class="who">{e(who)}{when}</span><p>{e(u["text"])}{cut}</p></div>'
    )


def chat(utterances: list[dict[str, Any]], provider_name: str) -> str:
    groups: dict[int, list[str]] = {}
    for u in sorted(utterances, key=lambda u: (u["attempt"], u["seq"])):
        groups.setdefault(u["attempt"], []).append(bubble(u, provider_name))
    return "".join(
        f'<div class="attempt" data-attempt="{attempt}"><h3>Call attempt {attempt}</h3>{"".join(items)}</div>'
        for attempt, items in groups.items()
    )


def timeline_item(item: dict[str, Any]) -> str:
    """One audit line. `item` is the feed's item shape: id, seq, type, at, text."""
    return (
        f'<li{attrs({"data-event-id": item["id"], "data-seq": item.get("seq"), "data-type": item["type"]})}>'
        f'<time>{e(item["at"])}</time> <b>{e(item["type"])}</b> <span>{e(item["text"])}</span></li>'
    )


def recording_view(job_id: str, provider_id: str, r: dict[str, Any]) -> dict[str, Any]:
    """One recording for the call page (and the live feed): where the page plays it from, and its label."""
    ok = r["status"] == "completed" and bool(r.get("url"))
    label = f"attempt {r['attempt']} · " + (
        f"{duration(r.get('duration_s'))}" + (" · dual channel" if r.get("channels") == 2 else "")
        if ok else f"no recording ({r['status']})")
    src = f"{call_url(job_id, provider_id)}/recordings/{quote(r['recording_sid'])}.wav" if ok else None
    return {"sid": r["recording_sid"], "src": src, "label": label}


def recording_item(v: dict[str, Any]) -> str:
    player = (f'<audio controls preload="none"{attrs({"src": v["src"]})}></audio>' if v["src"] else "")
    return f'<li{attrs({"data-recording-sid": v["sid"]})}>{player}<span>{e(v["label"])}</span></li>'


def recordings_section(job_id: str, doc: dict[str, Any]) -> str:
    views = [recording_view(job_id, doc["id"], r) for r in doc.get("recordings") or []]
    hidden = "" if views else " hidden"
    return (f'<section id="recordings" class="recording-wrap"{hidden}><h2>Recording</h2>'
            f'<ul>{"".join(recording_item(v) for v in views)}</ul></section>')


def call_page(job: dict[str, Any], doc: dict[str, Any], utterances: list[dict[str, Any]],
              items: list[dict[str, Any]], *, signed_in: bool) -> str:
    job_id, provider_id, name = job["job_id"], doc["id"], doc["service_provider"]
    view = row_view(doc)
    facts = "".join(
        f'<div><dt>{e(label)}</dt><dd data-field="{field}">{e(view["cells"][field])}</dd></div>'
        for field, label in FACTS
    )
    facts_attrs = attrs({
        "id": "facts",
        "class": "facts",
        "data-provider-id": provider_id,
        "data-status": view["status"],
        "data-outcome": view["outcome"],
        "data-terminal": "true" if view["terminal"] else "false",
    })
    body = f"""<p class="crumbs"><a href="/">Jobs</a> / <a href="{e(job_url(job_id))}">{e(job["problem"])}</a> /
<span>{e(name)}</span></p>
<h1>{e(name)}</h1>
<p class="meta">{e(doc["phone_number"])} · {e(doc["problem"])} ·
<span id="live" class="live" data-state="connecting">connecting…</span></p>
<dl{facts_attrs}>{facts}</dl>
{recordings_section(job_id, doc)}
<div class="columns">
<section class="chat-wrap"><h2>Conversation</h2>
<div id="chat" class="chat" aria-live="polite">{chat(utterances, name)}</div>
<p class="empty-chat">Nothing said yet.</p></section>
<section class="timeline-wrap"><h2>Event timeline <small>(UTC)</small></h2>
<ol id="timeline" class="timeline">{"".join(timeline_item(i) for i in items)}</ol></section>
</div>"""
    main = {
        "class": "call",
        "data-page": "call",
        "data-job-id": job_id,
        "data-provider-id": provider_id,
        "data-provider-name": name,
        "data-feed": f"{job_url(job_id)}/events?provider={provider_id}",
    }
    return page(f"{name} call", body, signed_in=signed_in, main=main)
