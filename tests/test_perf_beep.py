"""The beep detector counts zero crossings in C (audioop.cross): the same count as the per-sample Python loop it
replaced, so the detector's verdicts are unchanged."""

from __future__ import annotations

import audioop
import itertools
import math
import random
from array import array

from haggle_gateway.beep import SAMPLE_RATE, WINDOW, BeepDetector


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
