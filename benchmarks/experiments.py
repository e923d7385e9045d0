"""Measured what-ifs for changes in modules the benchmark does not own (applied in the gateway process only).

`python -m benchmarks.gateway_bench --experiment NAME` runs the gateway with NAME patched in, so a proposed
change to bridge.py / app.py comes with a figure before anyone edits those files. Nothing here is used by
the default run.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.websockets import WebSocket


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
    """The gateway as it was: media-stream frames through Starlette's WebSocket wrapper (its receive/send re-check
    the wrapper's state machine), the link otherwise unchanged."""
    from haggle_gateway import app

    init = app.StarletteLink.__init__

    def through_the_wrapper(self: app.StarletteLink, websocket: WebSocket) -> None:
        init(self, websocket)
        self._receive, self._send = websocket.receive, websocket.send

    app.StarletteLink.__init__ = through_the_wrapper  # type: ignore[method-assign]


def _no_gc_freeze() -> None:
    """The gateway without `gc.freeze()` after start and with CPython's own full-collection rule (gateway_proc reads
    the name; production freezes and paces full passes: haggle/gc_pacing.py)."""


def _cpython_gc() -> None:
    """The start-up heap frozen, full collections on CPython's own rule (as before haggle/gc_pacing.py;
    gateway_proc reads the name)."""


def _uvicorn_ws() -> None:
    """Media streams through uvicorn's own sans-I/O WebSocket protocol, as before haggle_gateway/ws_server.py."""
    from haggle import system

    options = system.uvicorn_options

    def uvicorns_protocol() -> dict[str, object]:
        return {**options(), "ws": "websockets-sansio"}

    system.uvicorn_options = uvicorns_protocol  # type: ignore[assignment]


def _no_read_callbacks() -> None:
    """Every media frame, mark echo and audio delta through the pump tasks (`receive`/`recv`), as before the
    synchronous path in the sockets' read callbacks."""
    from haggle_gateway import pumps

    pumps.TwilioPump.feed = lambda self, text: False  # type: ignore[method-assign]
    pumps.RealtimePump.feed = lambda self, event: False  # type: ignore[method-assign]


def _marks_200ms() -> None:
    """A mark per 200 ms of streamed audio instead of 100 ms (what-if)."""
    from haggle_gateway import outbound

    outbound.MARK_EVERY_MS = 200.0


def _python_beep_purity() -> None:
    """The voicemail-beep detector with its purity test run per sample in Python, as before it moved to C
    (benchmarks/beep_cost.py keeps that version as its baseline)."""
    from haggle_gateway import beep

    from .beep_cost import BaselineDetector

    beep.BeepDetector._best_purity = BaselineDetector._best_purity  # type: ignore[method-assign]


EXPERIMENTS: dict[str, Callable[[], None]] = {
    "pybeep": _python_beep_purity,
    "nogcfreeze": _no_gc_freeze,
    "cpythongc": _cpython_gc,
    "uvicornws": _uvicorn_ws,
    "nofeed": _no_read_callbacks,
    "marks200": _marks_200ms,
    "markeach": _mark_each_chunk,
    "tick50": _tick_50ms,
    "starlettews": _starlette_ws,
}


def apply(names: list[str]) -> None:
    for name in names:
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
        EXPERIMENTS[name]()
