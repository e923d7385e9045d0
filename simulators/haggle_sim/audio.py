"""mu-law 8 kHz audio helpers shared by the Twilio and realtime stand-ins.

Why synthetic "speech": the stand-ins never carry real voices, but the system under test runs energy-based
voice activity detection and byte-accurate playback accounting over the audio. A few harmonics of a voice-like
pitch under a syllable-rate envelope is loud, voiced and bursty like speech, deterministic (tests can compare
bytes), and cheap."""

from __future__ import annotations

import audioop
import math
from array import array
from collections.abc import Iterator
from functools import lru_cache

SAMPLE_RATE = 8000
BYTES_PER_MS = SAMPLE_RATE // 1000  # mu-law: one byte per sample
FRAME_MS = 20
ULAW_SILENCE = 0xFF  # decodes to linear 0

_PEAK = 12000  # linear amplitude at the envelope's top: well above any VAD floor, far from clipping
_SYLLABLE_HZ = 4.0  # ~4 syllables per second, the usual speaking rate
_EDGE_MS = 10  # fade in/out so a line does not start or end with a click


def silence(ms: int) -> bytes:
    """`ms` milliseconds of mu-law digital silence."""
    if ms < 0:
        raise ValueError(f"silence length must be >= 0 ms, got {ms}")
    return bytes([ULAW_SILENCE]) * (ms * BYTES_PER_MS)


@lru_cache(maxsize=128)
def speech_like(ms: int, *, seed: int = 0) -> bytes:
    """`ms` milliseconds of a deterministic speech-like mu-law signal (same `ms` and `seed` -> same bytes).

    The seed varies pitch and syllable phase, so consecutive lines of a script do not sound identical.
    """
    if ms < 0:
        raise ValueError(f"speech length must be >= 0 ms, got {ms}")
    n = ms * BYTES_PER_MS
    f0 = 105.0 + (seed % 7) * 17.0
    phase = (seed % 5) * 0.37
    harmonics = ((1, 1.0), (2, 0.6), (3, 0.4), (4, 0.25), (5, 0.15))
    norm = sum(a for _, a in harmonics)
    edge = _EDGE_MS * BYTES_PER_MS
    pcm = array("h", bytes(2 * n))
    two_pi = 2.0 * math.pi
    for i in range(n):
        t = i / SAMPLE_RATE
        # A slow pitch wobble keeps the spectrum from being a pure stationary chord.
        f = f0 * (1.0 + 0.03 * math.sin(two_pi * 3.1 * t + phase))
        voiced = sum(a * math.sin(two_pi * f * k * t) for k, a in harmonics) / norm
        # Syllables: loud nuclei with dips between them that never reach silence (speech keeps a VAD "on").
        envelope = 0.4 + 0.6 * math.sin(math.pi * _SYLLABLE_HZ * t + phase) ** 2
        fade = min(1.0, i / edge, (n - 1 - i) / edge) if edge else 1.0
        pcm[i] = int(_PEAK * envelope * fade * voiced)
    return audioop.lin2ulaw(pcm.tobytes(), 2)


def frames(audio: bytes, frame_ms: int = FRAME_MS) -> Iterator[bytes]:
    """Split mu-law audio into fixed-size frames (160 bytes for 20 ms); a short last one is silence-padded."""
    if frame_ms <= 0:
        raise ValueError(f"frame_ms must be > 0, got {frame_ms}")
    size = frame_ms * BYTES_PER_MS
    for start in range(0, len(audio), size):
        chunk = audio[start : start + size]
        if len(chunk) < size:
            chunk += bytes([ULAW_SILENCE]) * (size - len(chunk))
        yield chunk


def rms_ulaw(chunk: bytes) -> float:
    """Root-mean-square level of mu-law audio on the 16-bit linear scale (0.0 for silence or no audio)."""
    if not chunk:
        return 0.0
    return float(audioop.rms(audioop.ulaw2lin(chunk, 2), 2))


_NOTE_MS = 280  # a note every 280 ms: a tune, not the ~4 Hz syllable rhythm of speech
_SCALE_HZ = (261.63, 293.66, 329.63, 392.0, 440.0, 523.25)  # C major pentatonic, one octave up to C5


@lru_cache(maxsize=16)
def music(ms: int, *, seed: int = 0) -> bytes:
    """`ms` milliseconds of deterministic synthetic hold music (mu-law): a legato pentatonic melody over a
    sustained low drone.

    Why it differs from `speech_like`: steady pitched notes that change every 280 ms with no dips between them,
    a constant drone and a fixed level (speech has a pitch wobble and a syllable envelope), so a classifier
    can tell music from speech; it is loud enough that an energy VAD hears it, as a real line's music is."""
    if ms < 0:
        raise ValueError(f"music length must be >= 0 ms, got {ms}")
    n = ms * BYTES_PER_MS
    note_len = _NOTE_MS * BYTES_PER_MS
    edge = _EDGE_MS * BYTES_PER_MS
    pcm = array("h", bytes(2 * n))
    two_pi = 2.0 * math.pi
    drone_hz = 130.81  # C3
    phase = 0.0  # the melody's phase runs on across notes: no click at a note change
    for i in range(n):
        note = _SCALE_HZ[(i // note_len * 7 + seed * 3 + (i // note_len) ** 2) % len(_SCALE_HZ)]
        phase += two_pi * note / SAMPLE_RATE
        t = i / SAMPLE_RATE
        melody = math.sin(phase) + 0.3 * math.sin(2.0 * phase)
        drone = 0.5 * math.sin(two_pi * drone_hz * t)
        fade = min(1.0, i / edge, (n - 1 - i) / edge) if edge else 1.0
        pcm[i] = int(0.45 * _PEAK * fade * (melody + drone) / 1.8)
    return audioop.lin2ulaw(pcm.tobytes(), 2)


def beep(ms: int = 500, hz: float = 1000.0) -> bytes:
    """An answering machine's beep: one steady sine (`hz`, default 1 kHz) of `ms` milliseconds, mu-law."""
    if ms < 0:
        raise ValueError(f"beep length must be >= 0 ms, got {ms}")
    n = ms * BYTES_PER_MS
    edge = min(_EDGE_MS * BYTES_PER_MS, n // 2)
    pcm = array("h", bytes(2 * n))
    for i in range(n):
        fade = min(1.0, i / edge, (n - 1 - i) / edge) if edge else 1.0
        pcm[i] = int(0.5 * _PEAK * fade * math.sin(2.0 * math.pi * hz * i / SAMPLE_RATE))
    return audioop.lin2ulaw(pcm.tobytes(), 2)
