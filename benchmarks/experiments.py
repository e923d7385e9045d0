"""Measured what-ifs for changes in modules the benchmark does not own (applied in the gateway process only).

`python -m benchmarks.gateway_bench --experiment NAME` runs the gateway with NAME patched in, so a proposed
change to bridge.py / app.py comes with a figure before anyone edits those files. Nothing here is used by
the default run.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.websockets import WebSocketDisconnect


def _tick_100ms() -> None:
    """The per-call ticker wakes every 100 ms instead of 50 ms."""
    from haggle_gateway import pumps

    pumps.TICK_S = 0.1


def _raw_asgi_link() -> None:
    """StarletteLink talks to the ASGI receive/send callables directly instead of through starlette's wrapper."""
    from haggle_gateway import app
    from haggle_gateway.bridge import Frame

    async def receive(self: app.StarletteLink) -> Frame:
        if self._closed:
            return Frame(closed=True)
        try:
            message = await self._ws._receive()
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed = True
            return Frame(closed=True)
        if message["type"] == "websocket.disconnect":
            self._closed = True
            return Frame(closed=True)
        text = message.get("text")
        if text is not None:
            return Frame(text=text)
        return Frame(binary=message.get("bytes") or b"")

    async def send(self: app.StarletteLink, text: str) -> None:
        await self._ws._send({"type": "websocket.send", "text": text})

    app.StarletteLink.receive = receive  # type: ignore[method-assign]
    app.StarletteLink.send = send  # type: ignore[method-assign]


def _mark_each_chunk() -> None:
    """The gateway as it was: a mark after every outbound chunk (the default now marks every ~100 ms)."""
    from haggle_gateway import outbound

    outbound.MARK_EVERY_MS = 0.0


def _tick_50ms() -> None:
    """The gateway as it was: the per-call ticker every 50 ms all call long (the default slows to 100 ms once the
    greeting gate is done)."""
    from haggle_gateway import pumps

    pumps.TICK_S = pumps.GREETING_TICK_S


def _starlette_ws() -> None:
    """The gateway as it was: media-stream frames through Starlette's WebSocket wrapper (receive/send_text)."""
    from haggle_gateway import app
    from haggle_gateway.bridge import Frame

    async def receive(self: app.StarletteLink) -> Frame:
        if self._closed:
            return Frame(closed=True)
        try:
            message = await self._ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            self._closed = True
            return Frame(closed=True)
        if message["type"] == "websocket.disconnect":
            self._closed = True
            return Frame(closed=True)
        text = message.get("text")
        if text is not None:
            return Frame(text=text)
        return Frame(binary=message.get("bytes") or b"")

    async def send(self: app.StarletteLink, text: str) -> None:
        await self._ws.send_text(text)

    app.StarletteLink.receive = receive  # type: ignore[method-assign]
    app.StarletteLink.send = send  # type: ignore[method-assign]


def _gc_freeze() -> None:
    """gc.freeze() once the process has started (applied by gateway_proc after startup, not here)."""


EXPERIMENTS: dict[str, Callable[[], None]] = {
    "tick100": _tick_100ms,
    "rawlink": _raw_asgi_link,
    "gcfreeze": _gc_freeze,
    "markeach": _mark_each_chunk,
    "tick50": _tick_50ms,
    "starlettews": _starlette_ws,
}


def apply(names: list[str]) -> None:
    for name in names:
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
        EXPERIMENTS[name]()
