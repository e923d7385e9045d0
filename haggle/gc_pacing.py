"""Full collections of the cyclic garbage collector, paced by heap growth rather than by CPython's own rule.

A full (generation-2) pass stops the event loop for as long as it takes to walk every tracked object: about
300 per live call in the gateway, so 20-50 ms at 250-300 calls, during which no audio moves either way
(benchmarks/README.md, "Full collections"). CPython starts one when the objects promoted to generation 2 since
the last pass exceed a quarter of those it kept then, at the next young collection after that. Every new call
promotes its long-lived state, so at steady load a pass falls due every time the calls grow by a quarter, and
it fires at some later, unrelated moment, in the middle of everyone's audio.

Here, as Go's GOGC=100 does for its heap, a pass runs once generation 2 has doubled since the last one left it
(and grown by at least `min_growth` objects): the number of passes drops fourfold, the memory they leave
uncollected is bounded by the live heap, and a gateway whose calls end without cyclic garbage (the normal case:
a call's objects are freed by reference counting when it ends) never needs one at steady load. The check counts
generation 2 once per `interval_s` (a list of references: about a millisecond per 100k objects). Young
collections (generations 0 and 1) are CPython's as ever: they are short and they free most cycles.

The start-up heap (code, settings, routers) is frozen first: it lives as long as the process and no pass should
walk it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

# CPython's automatic full pass is off while this runs: generation 2's count (young collections since the last
# full pass) never reaches it.
_NEVER = 1 << 30
# The setting is process-wide, and several systems may run in one process (tests): CPython's thresholds come
# back when the last one stops.
_installs = 0
_cpython_thresholds: tuple[int, ...] | None = None

FULL_PASSES = Counter("haggle_gc_full_passes_total", "Full collections started by the pacing rule")
FULL_PAUSE = Histogram("haggle_gc_full_pause_seconds", "How long each full collection stopped the event loop",
                       buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0))


@dataclass
class FullCollections:
    """Install once per process (`install`), then `start()` the periodic check on the running loop."""

    growth: float = 1.0  # a pass once generation 2 holds (1 + growth) times what the last pass left...
    min_growth: int = 50_000  # ...and at least this many objects more (~150 calls' state in the gateway)
    interval_s: float = 2.0
    freeze: bool = True  # move the start-up heap out of every later pass
    baseline: int = 0  # generation 2's size after the last pass (or the install)
    passes: int = 0
    last_pause_s: float = 0.0
    _installed: bool = False
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def install(self) -> None:
        if self._installed:
            return
        if self.freeze:
            gc.collect()  # what is garbage now is not frozen with the rest
            gc.freeze()
        global _installs, _cpython_thresholds
        if _installs == 0:
            _cpython_thresholds = gc.get_threshold()
            gc.set_threshold(_cpython_thresholds[0], _cpython_thresholds[1], _NEVER)
        _installs += 1
        self._installed = True
        self.baseline = len(gc.get_objects(generation=2))

    def uninstall(self) -> None:
        """CPython's own rule again once no instance in the process is installed (the frozen heap stays
        frozen)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if not self._installed:
            return
        self._installed = False
        global _installs
        _installs -= 1
        if _installs == 0 and _cpython_thresholds is not None:
            gc.set_threshold(*_cpython_thresholds)

    @property
    def due_at(self) -> int:
        """Generation 2's size at which the next pass runs."""
        return self.baseline + max(self.min_growth, int(self.growth * self.baseline))

    def check(self) -> bool:
        """Run a full pass if generation 2 has grown enough; True if one ran."""
        if not self._installed or len(gc.get_objects(generation=2)) < self.due_at:
            return False
        started = time.perf_counter()
        gc.collect(2)
        self.last_pause_s = time.perf_counter() - started
        self.baseline = len(gc.get_objects(generation=2))
        self.passes += 1
        FULL_PASSES.inc()
        FULL_PAUSE.observe(self.last_pause_s)
        log.debug("full collection: %.1f ms, %d objects kept", self.last_pause_s * 1000, self.baseline)
        return True

    def start(self) -> None:
        """The periodic check, on the running loop, until `uninstall`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-pacing")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)  # a periodic check, not synchronisation
            with contextlib.suppress(Exception):
                self.check()
