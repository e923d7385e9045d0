"""The three things a call bridge depends on, as protocols: the Twilio media stream (`TwilioLink`), the model's
realtime session (`RealtimeSession`) and a clock (`Clock`).

The production implementations are the Starlette WebSocket wrapper (app.py), `RealtimeClient` and `LoopClock`;
the in-process fakes in `haggle_sim.fakes` implement the same protocols, so bridge scenarios run on virtual time
without sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import realtime_events as rt


@dataclass(slots=True)
class Frame:
    """One WebSocket receive: a text frame, a binary frame, or the end of the connection.

    Not frozen: a frozen dataclass sets each field through `object.__setattr__`, which more than doubles the cost
    of making one, and one is made for every message a call receives. Nothing mutates a frame."""

    text: str | None = None
    binary: bytes | None = None
    closed: bool = False

    @property
    def size(self) -> int:
        """Bytes on the wire (UTF-8 is only measured when characters alone could hide a large frame)."""
        text = self.text
        if text is not None:
            # ASCII (every well-formed Media Streams frame) is one byte a character: no need to encode it.
            if len(text) * 4 > 1024 and not text.isascii():
                return len(text.encode("utf-8", "surrogatepass"))
            return len(text)
        return len(self.binary or b"")


class TwilioLink(Protocol):
    """The media stream. Besides the awaited `receive`/`send`, the hot path has a synchronous form: `attach(feed)`
    offers each text frame to `feed` as it is read (while nothing is queued ahead of it; True: handled, not
    queued for `receive`), and `send_now` writes its messages at once (in one write) while `writable_now`."""

    async def receive(self) -> Frame: ...

    async def send(self, text: str) -> None: ...

    @property
    def writable_now(self) -> bool: ...

    def send_now(self, *texts: str) -> None: ...

    def attach(self, feed: Callable[[str], bool] | None) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class LinkClosed(Exception):
    """The Twilio WebSocket is gone."""


class RealtimeSession(Protocol):
    """One open, configured model session (see docs/xai-realtime.md). `send`, `send_now` and `recv` raise
    `RealtimeError` once the session is gone. The synchronous forms mirror `TwilioLink`'s: `attach(feed)` offers
    each event to `feed` as it is read (while none is queued ahead of it), `send_now` writes at once while
    `writable_now`."""

    async def send(self, event: dict[str, Any]) -> None: ...

    @property
    def writable_now(self) -> bool: ...

    def send_now(self, event: dict[str, Any]) -> None: ...

    def attach(self, feed: Callable[[rt.ServerEvent], bool] | None) -> None: ...

    async def recv(self) -> rt.ServerEvent: ...

    async def close(self) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time in seconds, sleeping, and one-shot timers."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The running event loop's clock (production)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()

    def now(self) -> float:
        return self._loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        return self._loop.call_later(seconds, callback)
