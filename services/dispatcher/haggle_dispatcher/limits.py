"""Call slots and dial pacing shared by every dispatcher replica, kept in a JetStream KV bucket.

Two keys, each updated with compare-and-set on its revision so concurrent replicas never both win:
- `pace`: the earliest wall-clock time the next dial may start. Taking a turn moves it on by
  1/CALLS_PER_SECOND plus 10% headroom, so the account-wide rate holds however many replicas dial, and
  network jitter between our turn and Twilio's clock cannot bunch two turns into one of Twilio's seconds.
- `slots`: the dial keys currently holding one of MAX_CONCURRENT_CALLS slots, with when they took it.
  A slot is released when its call reaches a terminal state (by whichever replica sees that), and a
  slot older than the longest possible call is reclaimed, so a crashed replica cannot leak slots.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from haggle.bus import kv_read

log = logging.getLogger(__name__)

PACE_KEY = "pace"
SLOTS_KEY = "slots"


class SharedLimits:
    def __init__(
        self,
        kv: KeyValue,
        *,
        max_concurrent: int,
        calls_per_second: float,
        slot_ttl_s: float,
        poll_s: float = 0.05,
        clock=time.time,  # type: ignore[no-untyped-def]
    ) -> None:
        self.kv = kv
        self.max_concurrent = max_concurrent
        self.interval = 1.1 / calls_per_second
        self.slot_ttl_s = slot_ttl_s
        self.poll_s = poll_s
        self.clock = clock
        self._released = asyncio.Event()

    async def _read(self, key: str) -> tuple[bytes | None, int | None]:
        return await kv_read(self.kv, key)

    async def _cas(self, key: str, value: bytes, revision: int | None) -> bool:
        try:
            if revision is None:
                await self.kv.create(key, value)
            else:
                await self.kv.update(key, value, last=revision)
            return True
        except KeyWrongLastSequenceError:  # another replica won this round (create and update both say so)
            return False

    async def acquire_slot(self, dial_key: str, *, stop: asyncio.Event | None = None) -> None:
        """Wait for a free call slot and take it for `dial_key` (taking it again is a no-op)."""
        while True:
            raw, rev = await self._read(SLOTS_KEY)
            slots: dict[str, float] = msgspec.json.decode(raw) if raw else {}
            now = self.clock()
            if dial_key in slots:
                return
            live = {k: t for k, t in slots.items() if now - t < self.slot_ttl_s}
            if len(live) < self.max_concurrent:
                live[dial_key] = now
                if await self._cas(SLOTS_KEY, msgspec.json.encode(live), rev):
                    return
                continue
            if stop is not None and stop.is_set():
                raise asyncio.CancelledError("dispatcher stopping")
            # Slots are freed by whichever replica sees a call end; a short poll also catches other replicas.
            self._released.clear()
            try:
                await asyncio.wait_for(self._released.wait(), timeout=self.poll_s * 4)
            except TimeoutError:
                pass

    async def release_slot(self, dial_key: str) -> bool:
        while True:
            raw, rev = await self._read(SLOTS_KEY)
            if raw is None:
                return False
            slots: dict[str, float] = msgspec.json.decode(raw)
            if dial_key not in slots:
                return False
            del slots[dial_key]
            if await self._cas(SLOTS_KEY, msgspec.json.encode(slots), rev):
                self._released.set()
                return True

    async def live_slots(self) -> dict[str, float]:
        raw, _ = await self._read(SLOTS_KEY)
        return msgspec.json.decode(raw) if raw else {}

    async def take_turn(self) -> float:
        """Wait for this replica's turn to dial; returns the wall-clock time the turn starts."""
        while True:
            raw, rev = await self._read(PACE_KEY)
            next_at = float(raw.decode()) if raw else 0.0
            now = self.clock()
            start = max(now, next_at)
            if await self._cas(PACE_KEY, repr(start + self.interval).encode(), rev):
                if start > now:
                    await asyncio.sleep(start - now)  # the turn is ours; wait until it begins
                return start
