"""Shared plumbing of the two processes under test: the event loop choice and the stdin-driven lifecycle.

Each process under test prints `READY <port>` on stdout once it listens, runs until its stdin closes (the
benchmark's way to stop it without signals racing uvicorn's own handlers), then prints `STATS <json>` and exits.
A `window` line on stdin marks the start of the measured window (the GC pause counters restart there).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
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


async def until_stdin_closes(pauses: GcPauses | None = None) -> None:
    """Returns when the parent closes our stdin. A `window` line restarts the GC pause counters."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        if line.strip() == "window" and pauses is not None:
            pauses.reset()


def announce(port: int) -> None:
    print(f"READY {port}", flush=True)


def report(stats: dict[str, Any]) -> None:
    print(f"STATS {json.dumps(stats, default=str)}", flush=True)


class GcPauses:
    """Counts and times the collector's runs per generation: a gen-2 pass over a big heap stalls the loop."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total_ms = [0.0, 0.0, 0.0]
        self.max_ms = [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen = info.get("generation", 0)
        ms = (time.perf_counter() - self._started) * 1000.0
        self.count[gen] += 1
        self.total_ms[gen] += ms
        self.max_ms[gen] = max(self.max_ms[gen], ms)

    def reset(self) -> None:
        self.count, self.total_ms, self.max_ms = [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]

    def summary(self) -> dict[str, list[float]]:
        return {"count": list(self.count), "total_ms": [round(x, 1) for x in self.total_ms],
                "max_ms": [round(x, 2) for x in self.max_ms]}


def full_collection() -> dict[str, float]:
    """Objects the collector tracks, and how long one full collection over them takes (ms)."""
    started = time.perf_counter()
    gc.collect()
    return {"tracked_objects": len(gc.get_objects()), "full_gc_ms": round((time.perf_counter() - started) * 1000, 2)}
