"""Full collections of the cyclic garbage collector, paced by heap growth rather than by CPython's own rule.

A full (generation-2) pass stops the event loop for as long as it takes to walk every tracked object: about
300 per live call in the gateway, so 17-46 ms at 250 calls, during which no audio moves either way
(benchmarks/README.md, "Full collections, paced"). CPython starts one when the objects promoted to generation 2 since
the last pass exceed a quarter of those it kept then, at the next young collection after that. Every new call
promotes its long-lived state, so at steady load a pass falls due every time the calls grow by a quarter, and
it fires at some later, unrelated moment, in the middle of everyone's audio.

Here, as Go's GOGC=100 does for its heap, a pass runs once generation 2 has doubled since the last one left it:
what was promoted since is at least what that pass kept, and at least `min_growth` objects. Passes are a quarter
as frequent, and the garbage they leave waiting is bounded by the live heap. At steady load little is promoted
(a call's state moves to generation 2 once, soon after it starts), so a pass is rare there. What was promoted is
counted from the collector's callbacks around each generation-1 collection, where the young generations are
small; generation 2 itself is walked only after a full pass, which walks it anyway (counting it on a timer
instead cost ~7 ms per look at 250 calls, a stall of its own). Young collections (generations 0 and 1) stay
CPython's: they are short and they free most cycles.

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

    growth: float = 1.0  # a pass once what was promoted to generation 2 since the last one reaches `growth` times...
    min_growth: int = 50_000  # ...what that pass kept, and at least this many objects (~150 calls' state here)
    interval_s: float = 2.0
    freeze: bool = True  # move the start-up heap out of every later pass
    baseline: int = 0  # generation 2's size after the last full pass (or the install)
    promoted: int = 0  # objects moved into generation 2 since then (survivors of generation-1 collections)
    passes: int = 0
    last_pause_s: float = 0.0
    _installed: bool = False
    _young: int = 0
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
        self.baseline = len(gc.get_objects(generation=2))  # a walk of generation 2: once here, once per pass
        self.promoted = 0
        gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        """CPython's own rule again once no instance in the process is installed (the frozen heap stays
        frozen)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if not self._installed:
            return
        self._installed = False
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        global _installs
        _installs -= 1
        if _installs == 0 and _cpython_thresholds is not None:
            gc.set_threshold(*_cpython_thresholds)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Counting generation 2 itself would walk every object in it (~7 ms at 250 calls, and a stall in the
        # audio path each time); the young generations are small, and a generation-1 collection moves what
        # survives of them into generation 2.
        generation = info["generation"]
        if generation == 1:
            if phase == "start":
                self._young = len(gc.get_objects(generation=0)) + len(gc.get_objects(generation=1))
            else:
                self.promoted += max(0, self._young - info["collected"] - info["uncollectable"])
        elif generation == 2 and phase == "stop":  # ours, or anyone's gc.collect()
            self.baseline = len(gc.get_objects(generation=2))
            self.promoted = 0

    @property
    def due_at(self) -> int:
        """How many promoted objects make the next pass due."""
        return max(self.min_growth, int(self.growth * self.baseline))

    def check(self) -> bool:
        """Run a full pass if enough has been promoted to generation 2 since the last one; True if one ran."""
        if not self._installed or self.promoted < self.due_at:
            return False
        started = time.perf_counter()
        gc.collect(2)
        self.last_pause_s = time.perf_counter() - started
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
            try:
                self.check()
            except Exception:  # a failed pass must not end the pacing: CPython's own full pass stays off
                log.exception("full collection check failed")
