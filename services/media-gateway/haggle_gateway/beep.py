"""An answering machine's beep in the callee's audio: one steady, pure tone (roughly 400-2100 Hz) lasting at
least ~200 ms. Pure: feed it mu-law, it says when it heard one.

Why these tests: speech changes pitch every few tens of milliseconds and spreads its energy over many
frequencies; hold music holds a note for a few hundred milliseconds but under a drone and harmonics, and
mostly lower. A beep is one frequency carrying nearly all the energy, steady from window to window. Each 40 ms
window: its frequency from the zero crossings, its purity as the share of its energy at that frequency (a
Goertzel filter at exactly that frequency), and whether it matches the previous window's.
"""

from __future__ import annotations

import audioop
import math
from array import array

SAMPLE_RATE = 8000
WINDOW = 320  # 40 ms
MIN_HZ, MAX_HZ = 400.0, 2100.0
MIN_RMS = 300.0  # 16-bit linear; well under a beep's level, over line noise
MIN_PURITY = 0.8
SAME_PITCH = 0.05  # consecutive windows within 5 %
MIN_WINDOWS = 5  # 200 ms


def _purity(samples: array, hz: float) -> float:
    """Share of the window's mean-square power at `hz` (1.0 for a pure sine at exactly that frequency)."""
    coeff = 2.0 * math.cos(2.0 * math.pi * hz / SAMPLE_RATE)
    s1 = s2 = 0.0
    total = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2, s1 = s1, s0
        total += x * x
    if total <= 0:
        return 0.0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2  # |X|^2
    n = len(samples)
    return (2.0 * power / (n * n)) / (total / n)


class BeepDetector:
    def __init__(self) -> None:
        self._buf = array("h")
        self._run = 0
        self._last_hz = 0.0
        self.heard = False

    def feed(self, ulaw: bytes) -> bool:
        """True once, when a beep has been heard."""
        if self.heard:
            return False
        self._buf.frombytes(audioop.ulaw2lin(ulaw, 2))
        while len(self._buf) >= WINDOW:
            window = self._buf[:WINDOW]
            del self._buf[:WINDOW]
            if self._window(window):
                self.heard = True
                return True
        return False

    def _window(self, samples: array) -> bool:
        pcm = samples.tobytes()
        if audioop.rms(pcm, 2) < MIN_RMS:
            self._run = 0
            return False
        # Sign changes between neighbours, counted in C: this runs on every inbound frame until the callee has
        # answered, and the Python loop it replaces was most of the detector's cost.
        crossings = audioop.cross(pcm, 2)
        hz = crossings * SAMPLE_RATE / (2.0 * len(samples))
        # Zero crossings place the tone within half a crossing (12.5 Hz); the Goertzel bin is 25 Hz wide, so
        # the purity is the best of a few frequencies around that estimate.
        if not (MIN_HZ <= hz <= MAX_HZ) or max(_purity(samples, hz + k * 6.25) for k in range(-3, 4)) < MIN_PURITY:
            self._run = 0
            return False
        steady = self._run > 0 and abs(hz - self._last_hz) <= SAME_PITCH * self._last_hz
        self._run = self._run + 1 if steady or self._run == 0 else 1
        self._last_hz = hz
        return self._run >= MIN_WINDOWS
