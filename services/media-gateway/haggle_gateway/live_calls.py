"""The calls (and prewarmed realtime sessions) this gateway process holds right now.

Why a registry: facts about a call can reach the wrong replica. Twilio's AMD webhook may land on replica A
while the media stream runs on replica B, so every replica subscribes to MachineDetected events (core NATS,
`haggle.job.*.provider.*.amd`) and the one that holds the call ends it. A verdict that arrives before the
stream starts is remembered for a minute. On shutdown, `drain()` lets live calls finish on their own until
a deadline, then ends the rest with reason "shutdown".

Prewarms: `/twiml` starts opening the realtime session while the call is being connected, so the greeting
is not late (opening a session takes a second or more). The stream picks it up if it lands on this replica; unused
sessions are closed after `prewarm_ttl_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Protocol

from haggle_contracts import codec, subjects
from haggle_contracts import events as ev
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from haggle import metrics

from .realtime_client import RealtimeClient, RealtimeError

log = logging.getLogger(__name__)

VERDICT_MEMORY_S = 60.0


class LiveCall(Protocol):
    call_sid: str

    def request_end(self, reason: str) -> None: ...

    def machine_verdict(self, answered_by: str) -> None: ...

    async def wait_closed(self) -> None: ...


class _Prewarm:
    def __init__(self, task: asyncio.Task[RealtimeClient], expiry: asyncio.TimerHandle) -> None:
        self.task = task
        self.expiry = expiry


class PrewarmPool:
    """At most one pending realtime session per call_id, dropped if nobody takes it within `ttl_s`."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, _Prewarm] = {}
        self.opened = 0
        self.expired = 0
        self._closing: set[asyncio.Future[None]] = set()

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._entries

    def start(self, call_id: str, opener: Callable[[], Awaitable[RealtimeClient]]) -> bool:
        """Begin opening a session for `call_id`; False if one is already pending (a re-fetched TwiML)."""
        if call_id in self._entries:
            return False
        loop = asyncio.get_running_loop()
        task: asyncio.Task[RealtimeClient] = asyncio.ensure_future(opener())  # type: ignore[arg-type]
        task.add_done_callback(_log_prewarm_failure)
        expiry = loop.call_later(self.ttl_s, self._expire, call_id)
        self._entries[call_id] = _Prewarm(task, expiry)
        self.opened += 1
        return True

    async def take(self, call_id: str, timeout_s: float) -> RealtimeClient | None:
        """The prewarmed session for `call_id` (waiting up to `timeout_s` if still opening), else None."""
        entry = self._entries.pop(call_id, None)
        if entry is None:
            return None
        entry.expiry.cancel()
        try:
            return await asyncio.wait_for(asyncio.shield(entry.task), timeout_s)
        except (RealtimeError, TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not entry.task.cancelled():
                entry.task.cancel()
                raise
            entry.task.cancel()
            log.warning("prewarmed realtime session for %s unusable: %s", call_id, exc)
            return None

    def _expire(self, call_id: str) -> None:
        entry = self._entries.pop(call_id, None)
        if entry is None:
            return
        self.expired += 1
        log.info("prewarmed realtime session for %s unused after %.0fs; closing it", call_id, self.ttl_s)
        closing = asyncio.ensure_future(_discard(entry.task))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.expiry.cancel()
        await asyncio.gather(*(_discard(e.task) for e in entries), return_exceptions=True)


def _log_prewarm_failure(task: asyncio.Task[RealtimeClient]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("realtime prewarm failed: %s", task.exception())


async def _discard(task: asyncio.Task[RealtimeClient]) -> None:
    if not task.done():
        task.cancel()
        try:
            await task
        except BaseException:
            return
        return
    if task.cancelled() or task.exception() is not None:
        return
    await task.result().close()


class LiveCalls:
    def __init__(self, *, prewarm_ttl_s: float = 15.0) -> None:
        self.calls: dict[str, LiveCall] = {}
        self.prewarms = PrewarmPool(prewarm_ttl_s)
        self.stats: Counter[str] = Counter()  # accepted, rejected:<reason>, ended:<reason>, ...
        self._verdicts: dict[str, tuple[str, float]] = {}
        self._sub: Subscription | None = None
        self.draining = False  # set on shutdown: no new calls are taken

    def register(self, call: LiveCall) -> None:
        if call.call_sid not in self.calls:
            metrics.LIVE_CALLS.inc()
        self.calls[call.call_sid] = call
        verdict = self._verdicts.pop(call.call_sid, None)
        if verdict is not None and time.monotonic() - verdict[1] < VERDICT_MEMORY_S:
            log.info("call %s: machine verdict %s arrived before the stream", call.call_sid, verdict[0])
            call.machine_verdict(verdict[0])

    def unregister(self, call: LiveCall) -> None:
        if self.calls.get(call.call_sid) is call:
            del self.calls[call.call_sid]
            metrics.LIVE_CALLS.dec()

    def count(self, key: str) -> None:
        self.stats[key] += 1

    def on_machine_detected(self, event: ev.MachineDetected) -> bool:
        """Hand an AMD verdict to the call (evidence: the call decides; docs/twilio-media-streams.md, "Answering
        machine detection"); True if this process held the call."""
        if not event.is_machine:
            return False
        call = self.calls.get(event.call_sid)
        if call is None:
            now = time.monotonic()
            self._verdicts = {k: v for k, v in self._verdicts.items() if now - v[1] < VERDICT_MEMORY_S}
            self._verdicts[event.call_sid] = (event.answered_by, now)
            return False
        log.info("call %s: AMD says %s", event.call_sid, event.answered_by)
        call.machine_verdict(event.answered_by)
        return True

    async def subscribe_amd(self, nc: NatsClient) -> None:
        """Core NATS subscription to every call's MachineDetected (JetStream also stores them; no ack needed)."""

        async def handler(msg: Msg) -> None:
            try:
                event = codec.decode(msg.data)
            except codec.EventDecodeError as exc:
                log.warning("undecodable AMD event on %s: %s", msg.subject, exc)
                return
            if isinstance(event, ev.MachineDetected):
                self.on_machine_detected(event)

        self._sub = await nc.subscribe(subjects.provider_event_filter("amd"), cb=handler)

    async def unsubscribe(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # connection already closed
                log.debug("AMD unsubscribe failed", exc_info=True)
            self._sub = None

    async def drain(self, deadline_s: float) -> None:
        """Let live calls end on their own until the deadline, then end the rest with reason 'shutdown'."""
        waits = {asyncio.ensure_future(c.wait_closed()): c for c in self.calls.values()}
        if waits:
            _, pending = await asyncio.wait(waits, timeout=max(0.0, deadline_s * 0.8))
            for wait in pending:
                waits[wait].request_end("shutdown")
            if pending:
                await asyncio.wait(pending, timeout=max(0.5, deadline_s * 0.2))
            for wait in waits:
                wait.cancel()
        await self.prewarms.close()
