"""Event ids, built in one place.

An event's id is its `Nats-Msg-Id`, so JetStream stores a re-publish of the same fact once. An id is therefore
derived from what makes the fact unique (the call and its status, the job, the dial attempt) and two services that
publish the same fact (the gateway and the dispatcher both publish `CallStatusChanged`) must build it the same
way: the helpers below are that way. Events that are new every time (a job request) get a random id.
"""

from __future__ import annotations

from .events import new_id


def fresh_event_id() -> str:
    """A new fact each time (a request, a restart): nothing to de-duplicate against."""
    return new_id("evt")


def job_cancelled_event_id(job_id: str) -> str:
    return f"cancel-{job_id}"


def job_completed_event_id(job_id: str) -> str:
    return f"completed-{job_id}"


def dial_event_id(job_id: str, provider_id: str, attempt: int) -> str:
    """The DialScheduled of one attempt."""
    return f"dial-{job_id}-{provider_id}-{attempt}"


def dial_failed_event_id(job_id: str, provider_id: str, attempt: int) -> str:
    return f"dialfail-{job_id}-{provider_id}-{attempt}"


def dialed_event_id(job_id: str, provider_id: str, attempt: int) -> str:
    """The CallDialed of one attempt."""
    return f"dialed-{job_id}-{provider_id}-{attempt}"


def call_status_event_id(call_sid: str, status: str) -> str:
    """Twilio may send a status twice, and the gateway and dispatcher may both report it: stored once."""
    return f"status-{call_sid}-{status}"


def machine_detected_event_id(call_sid: str) -> str:
    return f"amd-{call_sid}"


def utterance_event_id(call_sid: str, utterance_id: str, revision: int = 0) -> str:
    """A revision of an utterance is a new event; the first text keeps the short id."""
    return f"utt-{call_sid}-{utterance_id}" + (f"-r{revision}" if revision else "")


def quote_event_id(call_sid: str, tool_call_id: str) -> str:
    return f"quote-{call_sid}-{tool_call_id}"


def call_ended_event_id(call_sid: str) -> str:
    return f"end-{call_sid}"


def price_event_id(call_sid: str) -> str:
    """The PriceExtracted of one call."""
    return f"price-{call_sid}"
