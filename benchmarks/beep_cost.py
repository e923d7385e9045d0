"""What the voicemail-beep detector costs per 20 ms frame of the callee's audio, against its per-sample Python
purity test (the baseline, kept here), in the same process.

The detector runs on every inbound frame until the callee has answered our opening line, and all call long once
answering-machine detection suspects a machine. Silent frames stop at its level check, so the gateway benchmark
(whose callers send silence) never reaches the purity test; speech, hold music and line noise do.

    python -m benchmarks.beep_cost            # or: make bench-beep
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from array import array
from collections.abc import Callable
from pathlib import Path

from haggle_gateway import beep
from haggle_gateway.beep import BeepDetector
from haggle_sim import audio

RESULT = Path(__file__).parent / "results" / "beep.json"
FRAME = 160  # 20 ms of mu-law


def python_purity(samples: array, hz: float) -> float:
    """The purity test as it was: a Goertzel filter run sample by sample in Python."""
    coeff = 2.0 * math.cos(2.0 * math.pi * hz / beep.SAMPLE_RATE)
    s1 = s2 = total = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
        total += x * x
    if total <= 0:
        return 0.0
    n = len(samples)
    return (2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (n * n)) / (total / n)


class BaselineDetector(BeepDetector):
    """The detector with its purity measured per sample in Python (everything else is the detector's own)."""

    def _best_purity(self, pcm: bytes, center: int) -> float:
        samples = array("h", pcm)
        return max(python_purity(samples, (center + k) * beep._STEP_HZ) for k in range(-3, 4))


def _clips(seconds: int) -> dict[str, bytes]:
    rng = random.Random(5)
    ms = seconds * 1000
    return {
        "speech-like": audio.speech_like(ms, seed=1),
        "hold music": audio.music(ms, seed=1),
        "line noise": bytes(rng.randrange(256) for _ in range(8 * ms)),
        "silence": audio.silence(ms),
    }


def _us_per_frame(make: Callable[[], BeepDetector], clip: bytes, rounds: int) -> tuple[float, int]:
    """Median over rounds of the CPU time per frame (us), and how many beeps the last round heard."""
    frames = [clip[i:i + FRAME] for i in range(0, len(clip) - FRAME + 1, FRAME)]
    times: list[float] = []
    beeps = 0
    for _ in range(rounds):
        detector = make()
        beeps = 0
        started = time.process_time()
        for frame in frames:
            if detector.feed(frame):
                beeps += 1
                detector.heard = False  # keep listening: the cost of every frame is what is measured
        times.append((time.process_time() - started) / len(frames) * 1e6)
    return statistics.median(times), beeps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=10, help="audio per clip")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per detector; the median is kept")
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    rows = []
    for name, clip in _clips(args.seconds).items():
        # Alternate the two, so a slow minute of the machine lands on both.
        base, base_beeps = _us_per_frame(BaselineDetector, clip, args.rounds)
        ours, our_beeps = _us_per_frame(BeepDetector, clip, args.rounds)
        if base_beeps != our_beeps:
            raise SystemExit(f"{name}: the detectors disagree ({base_beeps} vs {our_beeps} beeps)")
        rows.append({"audio": name, "baseline_us": round(base, 2), "detector_us": round(ours, 2),
                     "ratio": round(ours / base, 3) if base else None, "beeps": our_beeps})
    print("| callee audio | per-sample Python purity, us per 20 ms frame | purity in C | ratio |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['audio']} | {r['baseline_us']:.1f} | {r['detector_us']:.1f} | {r['ratio']:.3f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seconds": args.seconds, "rounds": args.rounds, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
