"""Which providers an event touches: the one fan-out the fold, the projector and the dashboard share.

A `JobStarted` touches every provider it lists (and brings each one's spec), a `JobCancelled` every provider the
job already has, a `ProviderEvent` its own provider, and anything else (`JobCompleted`) none. An event type
declared as a `ProviderEvent` subclass is fanned out with no change here.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import events as ev

Target = tuple[str, ev.ProviderSpec | None]


def targets(event: ev.Event, known: Iterable[str]) -> list[Target]:
    """The providers `event` changes, each with the spec a JobStarted brings (None otherwise).

    `known` is the job's providers so far; only a JobCancelled reads it, so a caller that must look them up (the
    projector reads its store) may pass them only for that event.
    """
    if isinstance(event, ev.JobStarted):
        return [(spec.id, spec) for spec in event.providers]
    if isinstance(event, ev.JobCancelled):
        return [(pid, None) for pid in known]
    if isinstance(event, ev.ProviderEvent):
        return [(event.provider_id, None)]
    return []


def provider_of(event: ev.Event) -> str | None:
    """The provider an event is about, or None for a job-wide event."""
    return event.provider_id if isinstance(event, ev.ProviderEvent) else None
