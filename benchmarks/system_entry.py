"""`haggle up` with the benchmark's GC pause counters attached: `haggle.cli.main(["up"])` itself, plus a gc
callback (a few microseconds per collection). SIGUSR1 restarts the counters (the window opens); at exit they
are written as JSON to $HAGGLE_BENCH_GC_FILE. The gateway step reports the same counters from its own process;
here they show whether collector pauses (a full pass scans every live per-call object) reach the audio path.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
from pathlib import Path

from haggle.cli import main as haggle_main

from .serve import GcPauses


def main() -> int:
    pauses = GcPauses()
    signal.signal(signal.SIGUSR1, lambda *_: pauses.reset())
    out = os.environ.get("HAGGLE_BENCH_GC_FILE")
    if out:
        atexit.register(lambda: Path(out).write_text(json.dumps(pauses.summary())))
    return haggle_main(["up"])


if __name__ == "__main__":
    raise SystemExit(main())
