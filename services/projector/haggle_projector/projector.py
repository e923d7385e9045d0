"""Applies the event log to the provider store, exactly once per event, one transaction per event.

The JetStream consumer delivers at least once; each row remembers the stream sequence of the last
event applied to it (`last_seq`), so a redelivered event is recognised and skipped. The fold itself is
`haggle_contracts.state.apply`, shared with every other reader of the log.

All the rows one event touches (every provider of a JobStarted) are written in one transaction, so a
reader never sees half an event. A store that refuses the values themselves (`StoreRejected`: retrying
can never help) must not stall every other job behind that one event: the rows the store accepts are
written, each refused row is marked `projection_error` (with the reason in `failure_reason`), the event
is dead-lettered with the reason (`Rejected`), counted in `haggle_projection_errors_total` and shown in
`/healthz`, and the projection moves on. A rebuild meets the same refusals and gives the same rows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from haggle_contracts import events as ev
from haggle_contracts import fanout, subjects, text
from haggle_contracts import state as st
from nats.js import JetStreamContext
from prometheus_client import Counter

from haggle import bus
from haggle.consumer import Delivery, Rejected

from .stores import ProviderStore, StoreRejected

log = logging.getLogger(__name__)

PROJECTION_ERROR = "projection_error"
PROJECTION_ERRORS = Counter(
    "haggle_projection_errors_total", "Events the projection store refused (rows marked projection_error)"
)


class Projector:
    def __init__(self, store: ProviderStore) -> None:
        self.store = store
        self.applied = 0
        self.applied_seq = 0  # the highest stream sequence this projector has finished with
        self.errors = 0
        self.last_error: dict[str, Any] | None = None
        self._advanced = asyncio.Event()

    async def handle(self, event: ev.Event, delivery: Delivery) -> None:
        await self.apply(event, delivery.seq)

    async def wait_applied(self, seq: int, within_s: float) -> bool:
        """True once this projector has finished with stream sequence `seq` (False after `within_s` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self.applied_seq < seq:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            advanced = self._advanced
            try:
                await asyncio.wait_for(advanced.wait(), remaining)
            except TimeoutError:
                return self.applied_seq >= seq
        return True

    def _advance(self, seq: int) -> None:
        if seq > self.applied_seq:
            self.applied_seq = seq
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    async def apply(self, event: ev.Event, seq: int) -> None:
        """Apply one event; raises `Rejected` (after marking the refused rows) when the store refuses it."""
        updates: list[st.ProviderState] = []
        for provider_id, spec in await self._targets(event):
            updated = await self._fold(provider_id, event, seq, spec)
            if updated is not None:
                updates.append(updated)
        if updates:
            try:
                await self.store.upsert_many(updates)
            except StoreRejected as exc:
                reason = f"{type(event).__name__} seq {seq}: {exc}"
                await self._quarantine(updates, seq, reason)
                self._advance(seq)
                raise Rejected(reason) from exc
            self.applied += 1
        self._advance(seq)

    async def _targets(self, event: ev.Event) -> list[fanout.Target]:
        # Only a JobCancelled needs the job's providers, so only it costs a store read.
        cancelled = isinstance(event, ev.JobCancelled)
        known = [row.id for row in await self.store.list_job(event.job_id)] if cancelled else []
        return fanout.targets(event, known)

    async def _fold(
        self, provider_id: str, event: ev.Event, seq: int, spec: ev.ProviderSpec | None
    ) -> st.ProviderState | None:
        current = await self.store.get(provider_id)
        if current is not None and current.last_seq >= seq:
            return None  # already applied: a redelivery
        if current is not None and current.job_id != event.job_id:
            log.error("provider id %s belongs to job %s, not %s: event seq %s ignored",
                      provider_id, current.job_id, event.job_id, seq)
            return None
        if current is not None and current.call_status == PROJECTION_ERROR:
            return None  # the row no longer follows the log; folding later events onto it would invent state
        updated = st.apply(current, event, spec)
        if updated is None:
            log.warning("seq %s: %s for unknown provider %s ignored", seq, type(event).__name__, provider_id)
            return None
        updated.last_seq = seq
        return updated

    async def _quarantine(self, updates: list[st.ProviderState], seq: int, reason: str) -> None:
        """Write each row alone: the ones the store accepts as they are, the refused ones as `projection_error`."""
        log.error("projection store refused %s; marking the refused rows %s", reason, PROJECTION_ERROR)
        self.errors += 1
        self.last_error = {"seq": seq, "reason": text.scrub(reason)}
        PROJECTION_ERRORS.inc()
        for row in updates:
            try:
                await self.store.upsert_many([row])
                continue
            except StoreRejected:
                pass
            marked = _scrubbed(row)
            marked.call_status = PROJECTION_ERROR
            marked.failure_reason = text.scrub(reason)
            marked.last_seq = seq
            try:
                await self.store.upsert_many([marked])
            except StoreRejected:
                log.exception("provider %s: even the scrubbed projection_error row was refused", row.id)


def _scrubbed(row: st.ProviderState) -> st.ProviderState:
    """The row with every string passed through `text.scrub`, so the store can hold it."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return text.scrub(value)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return msgspec.convert(clean(msgspec.to_builtins(row)), st.ProviderState)


async def rebuild(js: JetStreamContext, store: ProviderStore) -> int:
    """Empty the store and replay the whole stream into it. Returns the number of events applied.

    Events the live consumer dead-letters (malformed, against the text rule, on the wrong subject) are
    skipped the same way, and store refusals mark the same rows, so the rebuilt rows equal the live ones."""
    await store.reset()
    projector = Projector(store)
    count = 0
    async for stored in bus.replay(js, subjects.all_jobs_filter()):
        if stored.event is not None:
            try:
                await projector.apply(stored.event, stored.seq)
            except Rejected:
                pass
            count += 1
    return count
