"""Applies the event log to the provider store, exactly once per event.

The JetStream consumer delivers at least once; each row remembers the stream sequence of the last
event applied to it (`last_seq`), so a redelivered event is recognised and skipped. The fold itself is
`haggle_contracts.state.apply`, shared with every other reader of the log.
"""

from __future__ import annotations

import logging

from haggle_contracts import events as ev
from haggle_contracts import state as st
from haggle_contracts import subjects
from nats.js import JetStreamContext

from haggle import bus
from haggle.consumer import Delivery

from .stores import ProviderStore

log = logging.getLogger(__name__)


class Projector:
    def __init__(self, store: ProviderStore) -> None:
        self.store = store
        self.applied = 0

    async def handle(self, event: ev.Event, delivery: Delivery) -> None:
        await self.apply(event, delivery.seq)

    async def apply(self, event: ev.Event, seq: int) -> None:
        if isinstance(event, ev.JobStarted):
            for spec in event.providers:
                await self._apply_one(spec.id, event, seq, spec)
        elif isinstance(event, ev.JobCancelled):
            for row in await self.store.list_job(event.job_id):
                await self._apply_one(row.id, event, seq)
        elif isinstance(event, ev.JobCompleted):
            return
        elif hasattr(event, "provider_id"):
            await self._apply_one(event.provider_id, event, seq)  # type: ignore[attr-defined]

    async def _apply_one(
        self, provider_id: str, event: ev.Event, seq: int, spec: ev.ProviderSpec | None = None
    ) -> None:
        current = await self.store.get(provider_id)
        if current is not None and current.last_seq >= seq:
            return  # already applied: a redelivery
        if current is not None and current.job_id != event.job_id:
            log.error("provider id %s belongs to job %s, not %s: event seq %s ignored",
                      provider_id, current.job_id, event.job_id, seq)
            return
        updated = st.apply(current, event, spec)
        if updated is None:
            log.warning("seq %s: %s for unknown provider %s ignored", seq, type(event).__name__, provider_id)
            return
        updated.last_seq = seq
        await self.store.upsert(updated)
        self.applied += 1


async def rebuild(js: JetStreamContext, store: ProviderStore) -> int:
    """Empty the store and replay the whole stream into it. Returns the number of events applied."""
    await store.reset()
    projector = Projector(store)
    count = 0
    async for stored in bus.replay(js, subjects.all_jobs_filter()):
        if stored.event is not None:
            await projector.apply(stored.event, stored.seq)
            count += 1
    return count
