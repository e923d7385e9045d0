"""One human line per stored event: the audit view shared by `haggle events replay` and the dashboard timeline.

Kept in one place so the CLI and the web page never disagree about what an event says.
"""

from __future__ import annotations

from haggle_contracts import events as ev

from .bus import StoredEvent


def detail(e: ev.Event) -> str:
    """What happened, without the when/what/who columns (the dashboard lays those out itself)."""
    match e:
        case ev.JobStarted():
            return f"{len(e.providers)} provider(s), max ${e.max_price:g}: {e.problem[:60]}"
        case ev.DialScheduled():
            text = f"attempt {e.attempt} ({e.reason})"
            if e.not_before:
                text += f" not before {e.not_before:%H:%M:%S}"
            return text
        case ev.CallDialed():
            return f"attempt {e.attempt} sid {e.call_sid}"
        case ev.DialFailed():
            return f"attempt {e.attempt}: {e.reason} (code {e.code})"
        case ev.CallStatusChanged():
            return f"{e.status}" + (f" {e.duration_s:g}s" if e.duration_s else "") + f" [{e.source}]"
        case ev.MachineDetected():
            return e.answered_by
        case ev.UtteranceTranscribed():
            return f"#{e.seq} {e.role.value}: {e.text}"
        case ev.QuoteRecorded():
            return f"${e.price} {e.price_type.value} {e.conditions}".rstrip()
        case ev.CallEnded():
            return f"{e.reason} after {e.duration_s:.1f}s"
        case ev.PriceExtracted():
            text = f"{e.outcome.value} price={e.price} first={e.initial_quote} via {e.method}"
            if e.disagreement:
                text += f" (disagreement: {e.disagreement})"
            return text
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
    who = getattr(e, "provider_id", "")
    return f"{stored.seq:>6}  {when}  {type(e).__name__:<20} {who:<18} {detail(e)}"
