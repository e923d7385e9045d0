"""Shared plumbing of the two processes under test: the event loop choice and the stdin-driven lifecycle.

Each process under test prints `READY <port>` on stdout once it listens, runs until its stdin closes (the
benchmark's way to stop it without signals racing uvicorn's own handlers), then prints `STATS <json>` and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

LOOPS = ("asyncio", "uvloop")


def run(main: Callable[[], Coroutine[Any, Any, None]], loop: str) -> None:
    if loop not in LOOPS:
        raise SystemExit(f"--loop must be one of {', '.join(LOOPS)}, got {loop!r}")
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


async def until_stdin_closes() -> None:
    """Returns when the parent closes our stdin (or writes a line)."""
    await asyncio.to_thread(sys.stdin.readline)


def announce(port: int) -> None:
    print(f"READY {port}", flush=True)


def report(stats: dict[str, Any]) -> None:
    print(f"STATS {json.dumps(stats, default=str)}", flush=True)
