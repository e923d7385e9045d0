"""One human line per stored event: the audit view shared by `haggle events replay` and the dashboard timeline.

Kept in one place so the CLI and the web page never disagree about what an event says.
"""

from __future__ import annotations

from haggle_contracts import events as ev
from haggle_contracts import fanout

from .bus import StoredEvent


def _join(*parts: str | None) -> str:
    """The parts that are there, in order: an event's optional facts are left out rather than shown empty."""
    return " ".join(p for p in parts if p)


def detail(e: ev.Event) -> str:
    """What happened, without the when/what/who columns (the dashboard lays those out itself)."""
    match e:
        case ev.JobStarted():
            return f"{len(e.providers)} provider(s), max ${e.max_price:g}: {e.problem[:60]}"
        case ev.CallPlanned():
            text = f"round {e.round} ({e.reason})"
            if e.competitor is not None:
                said = "agreed" if e.competitor.agreed else "quoted"
                text += f" carrying {e.competitor.provider_id}'s {said} ${e.competitor.price:g} (all-in ${e.shown:g})"
            return text
        case ev.BookingRequested():
            return f"book at ${e.price:g} in: " + ("; ".join(e.windows) or "any time")
        case ev.BookingRecorded():
            return (f"confirmed {e.appointment or 'no time given'}" if e.confirmed else "not confirmed") + (
                f" ({e.notes})" if e.notes else "")
        case ev.OfferDecided():
            offer = f" ${e.offer:g}" if e.offer is not None else ""
            return f"{e.action}{offer} ({e.reason}): {e.say}"
        case ev.DialScheduled():
            return _join(f"attempt {e.attempt} ({e.reason})", e.round > 1 and f"round {e.round}",
                         e.not_before and f"not before {e.not_before:%H:%M:%S}")
        case ev.CallDialed():
            return f"attempt {e.attempt} sid {e.call_sid}" + (f" round {e.round}" if e.round > 1 else "")
        case ev.DialFailed():
            return f"attempt {e.attempt}: {e.reason} (code {e.code})"
        case ev.CallStatusChanged():
            return _join(e.status, e.duration_s and f"{e.duration_s:g}s", f"[{e.source}]")
        case ev.MachineDetected():
            return e.answered_by
        case ev.UtteranceTranscribed():
            return f"#{e.seq} {e.role.value}: {e.text}"
        case ev.QuoteRecorded():
            return _join(f"${e.price}", e.price_type.value, e.conditions)
        case ev.CallEnded():
            return f"{e.reason} after {e.duration_s:.1f}s"
        case ev.PriceExtracted():
            return _join(f"{e.outcome.value} price={e.price} first={e.initial_quote} via {e.method}",
                         e.disagreement and f"(disagreement: {e.disagreement})")
        case ev.CallPriced():
            twilio = f"${e.twilio_price:.4f}" if e.twilio_price is not None else f"unknown ({e.twilio_price_missing})"
            return (f"{e.currency} {e.total:.4f}: Twilio {twilio} + realtime {e.realtime_minutes:.2f} min "
                    f"x ${e.realtime_price_per_minute:g} = ${e.realtime_cost:.4f}")
        case ev.HomeownerTransfer():
            return f"to the homeowner: {e.outcome}" + (f" ({e.dial_status})" if e.dial_status else "")
        case ev.InboundCallReceived():
            return f"attempt {e.attempt}: called back from {e.from_number}, sid {e.call_sid}"
        case ev.CallRecorded():
            if e.status != "completed":
                return f"recording {e.recording_sid} {e.status}" + (f" (error {e.error_code})" if e.error_code else "")
            return f"recording {e.recording_sid}: {e.duration_s or 0:g}s, {e.channels or 1} channel(s)"
        case ev.JobCompleted():
            return f"best {e.best_provider_id} at {e.best_price}"
        case ev.JobCancelled():
            return e.reason
        case _:
            return ""


def describe(stored: StoredEvent) -> str:
    """The CLI's audit line: sequence, time, event type, provider, detail."""
    e = stored.event
    if e is None:
        return f"{stored.seq:>6}  {stored.subject}  UNREADABLE: {stored.error}"
    when = e.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    who = fanout.provider_of(e) or ""
    return f"{stored.seq:>6}  {when}  {type(e).__name__:<20} {who:<18} {detail(e)}"
