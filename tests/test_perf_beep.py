"""The beep detector counts zero crossings (audioop.cross) and measures a window's purity (audioop.findfactor
against stored cosines and sines) in C: the same figures as the per-sample Python loops they replaced, so the
detector's verdicts are unchanged. `make bench-beep` measures what that saves."""

from __future__ import annotations

import audioop
import itertools
import math
import random
import sys
from array import array
from pathlib import Path

import pytest
from haggle_gateway import beep
from haggle_gateway.beep import SAMPLE_RATE, WINDOW, BeepDetector

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of the repository

# The per-sample Python Goertzel the detector used before its purity moved to C (the benchmark's baseline): the oracle.
from benchmarks.beep_cost import python_purity


def _pairwise_crossings(samples: array) -> int:
    return sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))


def test_cross_counts_what_the_python_loop_counted() -> None:
    rng = random.Random(7)
    windows = [
        array("h", [0] * WINDOW),
        array("h", [-1] * WINDOW),
        array("h", [(-1) ** i for i in range(WINDOW)]),
        array("h", [0, -1, 0, 0, -5, 3, -32768, 32767] * (WINDOW // 8)),
        array("h", [int(3000 * math.sin(2 * math.pi * 1000 * i / SAMPLE_RATE)) for i in range(WINDOW)]),
    ]
    windows += [array("h", [rng.randint(-32768, 32767) for _ in range(WINDOW)]) for _ in range(200)]
    windows += [array("h", [rng.choice((-2, -1, 0, 1, 2)) for _ in range(WINDOW)]) for _ in range(200)]
    for samples in windows:
        assert audioop.cross(samples.tobytes(), 2) == _pairwise_crossings(samples)


def _ulaw_tone(hz: float, ms: int, amplitude: int = 8000) -> bytes:
    n = SAMPLE_RATE * ms // 1000
    pcm = array("h", [int(amplitude * math.sin(2 * math.pi * hz * i / SAMPLE_RATE)) for i in range(n)])
    return audioop.lin2ulaw(pcm.tobytes(), 2)


def test_a_beep_is_still_heard_and_speech_like_noise_is_not() -> None:
    detector = BeepDetector()
    tone = _ulaw_tone(1000, 400)
    heard = [detector.feed(tone[i:i + 160]) for i in range(0, len(tone), 160)]
    assert heard.count(True) == 1

    rng = random.Random(3)
    noise = BeepDetector()
    frames = [bytes(rng.randrange(256) for _ in range(160)) for _ in range(100)]
    assert not any(noise.feed(frame) for frame in frames)


def test_purity_in_c_is_the_goertzel_purity() -> None:
    rng = random.Random(11)
    windows: list[array] = []
    for _ in range(300):
        windows.append(array("h", [rng.randint(-32768, 32767) for _ in range(WINDOW)]))  # noise, full scale
        hz, peak, phase = rng.uniform(300, 2200), rng.uniform(300, 32000), rng.uniform(0, 2 * math.pi)
        tone = [peak * math.sin(2 * math.pi * hz * i / SAMPLE_RATE + phase) + rng.gauss(0, peak * 0.05)
                for i in range(WINDOW)]
        windows.append(array("h", [max(-32768, min(32767, int(x))) for x in tone]))  # a noisy tone, any level
        windows.append(array("h", [int(5000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)  # a note over a drone
                                       + 3000 * math.sin(2 * math.pi * 110 * i / SAMPLE_RATE)) for i in range(WINDOW)]))
    for samples in windows:
        pcm = samples.tobytes()
        energy = beep._energy(pcm)
        assert energy == pytest.approx(float(sum(x * x for x in samples)), rel=1e-6)
        for bin_ in (61, rng.randint(62, 338), 339):  # the grid's ends and a bin between
            assert beep.purity(pcm, bin_, energy) == pytest.approx(
                python_purity(samples, bin_ * beep._STEP_HZ), abs=1e-4)
