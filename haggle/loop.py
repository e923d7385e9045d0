"""The event loop `haggle up` and `haggle run` serve on: uvloop where it is installed, else asyncio's own.

Why: the media gateway is one event loop moving 50 small WebSocket messages per second per call each way, so
the loop's own scheduling and socket I/O is most of a frame's cost; on uvloop the gateway used 15-20% less
CPU per call-minute and held more calls per core (benchmarks/README.md). uvicorn[standard] brings uvloop on
Linux and macOS; where it is missing (Windows, a minimal install) the stdlib loop runs instead.

HAGGLE_EVENT_LOOP=auto|uvloop|asyncio (default auto) overrides the choice; asking for uvloop where it is not
installed is a configuration error rather than a silent fallback.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import settings_table
from .config import ConfigError

log = logging.getLogger(__name__)

ENV = "HAGGLE_EVENT_LOOP"  # read here, before any Settings exist; its row in haggle/settings_table.py
T = TypeVar("T")


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def choose(env: dict[str, str] | None = None) -> str:
    """`uvloop` or `asyncio`, from HAGGLE_EVENT_LOOP and what is installed."""
    raw = settings_table.read(ENV, os.environ if env is None else env)
    if raw == "asyncio":
        return "asyncio"
    if uvloop_available():
        return "uvloop"
    if raw == "uvloop":
        raise ConfigError(f"{ENV}=uvloop but uvloop is not installed (pip install uvloop, or use auto)")
    return "asyncio"


def factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for `asyncio.Runner` (None: the stdlib default)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return None


def run(main: Coroutine[Any, Any, T], env: dict[str, str] | None = None) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    try:
        name = choose(env)
    except ConfigError:
        main.close()  # never awaited: close it so no "coroutine was never awaited" warning hides the error
        raise
    log.debug("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory(name)) as runner:
        return runner.run(main)
