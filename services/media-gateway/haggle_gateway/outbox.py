"""A per-call publishing queue, so a slow or restarting NATS never stalls the audio path.

The bridge `put()`s events without awaiting; one task publishes them in order (so a call's utterances reach
the stream in seq order) and retries failures with backoff. Event ids are deterministic, so a retry after a
timeout that actually succeeded is deduplicated by JetStream. At call end the bridge `flush()`es with a
bound: what was published before a crash stays published; what was still queued is the price of not
blocking audio.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from haggle_contracts import events as ev

log = logging.getLogger(__name__)


class EventPublisher(Protocol):
    async def publish(self, event: ev.Event) -> int: ...


class EventOutbox:
    def __init__(self, publisher: EventPublisher, *, label: str = "", max_backoff_s: float = 2.0) -> None:
        self._publisher = publisher
        self._label = label
        self._queue: deque[ev.Event] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._max_backoff_s = max_backoff_s
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.failures = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outbox-{self._label}")

    def put(self, event: ev.Event) -> None:
        """Queue an event (never blocks)."""
        self._queue.append(event)
        self._idle.clear()
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued so far is published; False if the bound ran out first."""
        self.start()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            log.warning("outbox %s: %d event(s) not published within %.1fs", self._label, len(self._queue),
                        timeout_s)
            return False

    async def close(self, timeout_s: float) -> bool:
        ok = await self.flush(timeout_s)
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        return ok

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closing:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            event = self._queue[0]
            try:
                await self._publisher.publish(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the event and retry: the id makes a duplicate harmless
                self.failures += 1
                log.warning("outbox %s: publishing %s failed (%s); retrying in %.2fs", self._label,
                            type(event).__name__, exc, backoff)
                await asyncio.sleep(backoff)  # retry backoff, not synchronisation
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            backoff = 0.05
            self._queue.popleft()
            self.published += 1
