"""DTMF (touch-tone) digits as in-band mu-law 8 kHz audio: a generator and a Goertzel decoder. Pure: no I/O.

Why in-band: a `<Connect><Stream>` media stream carries only audio towards the callee, so pressing a key on a
phone menu means playing the key's two tones into the outbound track, exactly as a handset would.

Generation follows the usual telephone practice (ITU-T Q.23/Q.24): each key is one frequency of the low
(row) group plus one of the high (column) group, sent together. The high tone is 2 dB louder than the low one
(positive twist, which compensates for the line's high-frequency loss): -7 dBm0 and -5 dBm0 by default. A
tone lasts about 100 ms and is followed by about 80 ms of silence, well above the 40 ms minimum a receiver
needs for each, so a digit is never merged with the next or missed.

Decoding is the classic Goertzel filter bank: the power at the eight key frequencies is measured over blocks
of 205 samples (25.6 ms; with this length the bins of neighbouring key frequencies stay apart). A block
holds a key when:
- the strongest row and the strongest column are both above an absolute floor;
- each stands well above the other frequencies of its group (speech and music spread over several);
- their ratio is within the allowed twist (high up to 8 dB above low, low up to 4 dB above high);
- the two tones carry most of the block's energy (speech, music and noise do not).
A digit is reported once it holds for two consecutive blocks (at least ~40 ms of tone), and again only
after a block without it. The decoder keeps its own buffer, so the 20 ms framing of a media stream (or any
other chunking) does not matter.
"""

from __future__ import annotations

import audioop
import math
from array import array
from dataclasses import dataclass, field

SAMPLE_RATE = 8000
KEYS = "123A456B789C*0#D"
ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COL_HZ = (1209.0, 1336.0, 1477.0, 1633.0)

TONE_MS = 100
GAP_MS = 80
LOW_DBM0 = -7.0
HIGH_DBM0 = -5.0

# G.711 mu-law: a full-scale sine is +3.17 dBm0, and full scale is 32635 on the 16-bit linear scale.
_ZERO_DBM0_PEAK = 32635 / 10 ** (3.17 / 20)
_ULAW_SILENCE = 0xFF
_EDGE_SAMPLES = 16  # 2 ms raised-cosine edges: no click (a click is broadband energy a receiver may trip on)

BLOCK = 205  # samples per Goertzel block
_MIN_TONE_POWER = (_ZERO_DBM0_PEAK * 10 ** (-30 / 20)) ** 2 / 2  # each tone at least -30 dBm0 (mean square)
_PEAK_OVER_GROUP = 6.3  # the winner of a group is >= 8 dB above the runner-up
_NORMAL_TWIST = 6.3  # high group up to 8 dB above low
_REVERSE_TWIST = 2.5  # low group up to 4 dB above high
_TONES_OF_TOTAL = 0.75  # the two tones carry >= 75% of the block's energy


def validate(digits: str) -> str:
    """`digits` if it is a non-empty string of DTMF keys (0-9 * # A-D, upper or lower case), else ValueError."""
    if not isinstance(digits, str) or not digits:
        raise ValueError("DTMF digits must be a non-empty string of 0-9, *, #, A-D")
    bad = sorted({c for c in digits.upper() if c not in KEYS})
    if bad:
        raise ValueError(f"DTMF digits {digits!r} contain {''.join(bad)!r}; only 0-9, *, #, A-D are keys")
    return digits.upper()


def frequencies(key: str) -> tuple[float, float]:
    """The (low, high) frequencies of one key."""
    k = validate(key)
    if len(k) != 1:
        raise ValueError(f"one key expected, got {key!r}")
    index = KEYS.index(k)
    return ROW_HZ[index // 4], COL_HZ[index % 4]


def _peak(dbm0: float) -> float:
    return _ZERO_DBM0_PEAK * 10 ** (dbm0 / 20)


def tone(key: str, ms: int = TONE_MS, *, low_dbm0: float = LOW_DBM0, high_dbm0: float = HIGH_DBM0) -> bytes:
    """One key's dual tone, `ms` milliseconds of mu-law 8 kHz."""
    if ms <= 0:
        raise ValueError(f"tone length must be > 0 ms, got {ms}")
    low, high = frequencies(key)
    a_low, a_high = _peak(low_dbm0), _peak(high_dbm0)
    n = ms * SAMPLE_RATE // 1000
    edge = min(_EDGE_SAMPLES, n // 2)
    pcm = array("h", bytes(2 * n))
    w_low, w_high = 2 * math.pi * low / SAMPLE_RATE, 2 * math.pi * high / SAMPLE_RATE
    for i in range(n):
        ramp = 1.0
        if edge and (i < edge or i >= n - edge):
            pos = i if i < edge else n - 1 - i
            ramp = 0.5 - 0.5 * math.cos(math.pi * pos / edge)
        value = ramp * (a_low * math.sin(w_low * i) + a_high * math.sin(w_high * i))
        pcm[i] = max(-32768, min(32767, round(value)))
    return audioop.lin2ulaw(pcm.tobytes(), 2)


def tones(digits: str, *, tone_ms: int = TONE_MS, gap_ms: int = GAP_MS, low_dbm0: float = LOW_DBM0,
          high_dbm0: float = HIGH_DBM0) -> bytes:
    """Every key of `digits` as tone + silence (the gap follows each key, the last one too)."""
    keys = validate(digits)
    if gap_ms < 0:
        raise ValueError(f"gap length must be >= 0 ms, got {gap_ms}")
    gap = bytes([_ULAW_SILENCE]) * (gap_ms * SAMPLE_RATE // 1000)
    return b"".join(tone(k, tone_ms, low_dbm0=low_dbm0, high_dbm0=high_dbm0) + gap for k in keys)


def duration_ms(digits: str, *, tone_ms: int = TONE_MS, gap_ms: int = GAP_MS) -> int:
    """How long `tones(digits)` plays."""
    return len(validate(digits)) * (tone_ms + gap_ms)


def _goertzel_power(samples: list[float], coeffs: tuple[float, ...]) -> list[float]:
    """Mean-square power of each frequency in `samples` (a sine of amplitude A gives about A*A/2)."""
    n = len(samples)
    out = []
    for coeff in coeffs:
        s1 = s2 = 0.0
        for x in samples:
            s1, s2 = x + coeff * s1 - s2, s1
        out.append(2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (n * n))
    return out


_ROW_COEFFS = tuple(2 * math.cos(2 * math.pi * f / SAMPLE_RATE) for f in ROW_HZ)
_COL_COEFFS = tuple(2 * math.cos(2 * math.pi * f / SAMPLE_RATE) for f in COL_HZ)


def classify_block(pcm: list[float]) -> str | None:
    """The key a block of linear samples holds, or None (see the module docstring for the tests applied)."""
    n = len(pcm)
    if n == 0:
        return None
    total = sum(x * x for x in pcm) / n
    rows = _goertzel_power(pcm, _ROW_COEFFS)
    cols = _goertzel_power(pcm, _COL_COEFFS)
    r = max(range(4), key=rows.__getitem__)
    c = max(range(4), key=cols.__getitem__)
    row, col = rows[r], cols[c]
    if row < _MIN_TONE_POWER or col < _MIN_TONE_POWER:
        return None
    if any(i != r and rows[i] * _PEAK_OVER_GROUP > row for i in range(4)):
        return None
    if any(i != c and cols[i] * _PEAK_OVER_GROUP > col for i in range(4)):
        return None
    if col > row * _NORMAL_TWIST or row > col * _REVERSE_TWIST:
        return None
    if row + col < _TONES_OF_TOTAL * total:
        return None
    return KEYS[4 * r + c]


@dataclass
class DtmfDecoder:
    """Feeds mu-law audio in any chunking; `feed` returns the digits that completed in it, in order."""

    _pending: array = field(default_factory=lambda: array("h"))
    _candidate: str | None = None  # the key the previous block held
    _reported: str | None = None  # the key reported and still sounding (not reported again until it stops)
    digits: str = ""  # everything decoded so far

    def feed(self, ulaw: bytes) -> str:
        if not ulaw:
            return ""
        self._pending.frombytes(audioop.ulaw2lin(ulaw, 2))
        found = ""
        while len(self._pending) >= BLOCK:
            block = [float(x) for x in self._pending[:BLOCK]]
            del self._pending[:BLOCK]
            key = classify_block(block)
            if key is not None and key == self._candidate and key != self._reported:
                found += key
                self._reported = key
            elif key != self._reported:
                self._reported = None
            self._candidate = key
        self.digits += found
        return found


def decode(ulaw: bytes) -> str:
    """All digits in a stretch of mu-law audio."""
    return DtmfDecoder().feed(ulaw)
