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
from functools import lru_cache

SAMPLE_RATE = 8000
WINDOW = 320  # 40 ms
MIN_HZ, MAX_HZ = 400.0, 2100.0
MIN_RMS = 300.0  # 16-bit linear; well under a beep's level, over line noise
MIN_PURITY = 0.8
SAME_PITCH = 0.05  # consecutive windows within 5 %
MIN_WINDOWS = 5  # 200 ms


# The purity test is a Goertzel filter, i.e. one DFT bin: |sum x[n] e^(-jwn)|^2. Computed per sample in Python it
# cost 20-90 us per 20 ms frame of speech, music or line noise (benchmarks/beep_cost.py), up to more than all the
# rest of a call's audio path, and it runs on every frame until the callee has answered. Here the two sums are dot
# products with a stored cosine and sine, taken in C by audioop.findfactor (sum(x*r) / sum(r*r)). The windows'
# frequency estimates are multiples of 12.5 Hz and the bins tried sit 6.25 Hz apart, so the references form a
# fixed grid, built on first use.
_STEP_HZ = 6.25
_REF_PEAK = 32000.0  # near full scale, so rounding the references to integers costs ~1e-5 of their amplitude
_WIDE = 1 << 16  # lin2lin from 2 to 4 bytes scales by this


@lru_cache(maxsize=512)
def _references(bin_: int) -> tuple[bytes, float, bytes, float]:
    """A window of cosine and of sine at `bin_` x 6.25 Hz as 16-bit PCM, each with its energy (sum of squares)."""
    w = 2.0 * math.pi * bin_ * _STEP_HZ / SAMPLE_RATE
    cos = array("h", [round(_REF_PEAK * math.cos(w * n)) for n in range(WINDOW)])
    sin = array("h", [round(_REF_PEAK * math.sin(w * n)) for n in range(WINDOW)])
    return cos.tobytes(), float(sum(v * v for v in cos)), sin.tobytes(), float(sum(v * v for v in sin))


def _energy(pcm: bytes) -> float:
    """sum(x^2) over a 16-bit window. audioop.rms truncates to an integer, so it is taken on the samples widened
    to 32 bits, where that truncation is 2^-16 of a sample."""
    rms = audioop.rms(audioop.lin2lin(pcm, 2, 4), 4) / _WIDE
    return rms * rms * (len(pcm) // 2)


def purity(pcm: bytes, bin_: int, energy: float) -> float:
    """Share of a window's mean-square power at `bin_` x 6.25 Hz (1.0 for a pure sine at exactly that frequency).
    `pcm` is one window of 16-bit samples, `energy` its sum of squares (> 0)."""
    cos, cos_energy, sin, sin_energy = _references(bin_)
    re = audioop.findfactor(pcm, cos) * cos_energy / _REF_PEAK
    im = audioop.findfactor(pcm, sin) * sin_energy / _REF_PEAK
    n = len(pcm) // 2
    return (2.0 * (re * re + im * im) / (n * n)) / (energy / n)


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
        if not MIN_HZ <= hz <= MAX_HZ:
            self._run = 0
            return False
        # Zero crossings place the tone within half a crossing (12.5 Hz); the Goertzel bin is 25 Hz wide, so
        # the purity is the best of a few frequencies around that estimate (hz is crossings x 12.5 Hz: bin
        # 2 x crossings).
        if self._best_purity(pcm, round(hz / _STEP_HZ)) < MIN_PURITY:
            self._run = 0
            return False
        steady = self._run > 0 and abs(hz - self._last_hz) <= SAME_PITCH * self._last_hz
        self._run = self._run + 1 if steady or self._run == 0 else 1
        self._last_hz = hz
        return self._run >= MIN_WINDOWS

    def _best_purity(self, pcm: bytes, center: int) -> float:
        """The highest `purity` of a loud window over the seven bins around bin `center`."""
        energy = _energy(pcm)
        return max(purity(pcm, center + k, energy) for k in range(-3, 4))
