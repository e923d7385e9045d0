"""The load generator's callers: silent by default, or talking (speech-like audio after each frame's id), which is
what reaches the gateway's per-frame listening. The frames' ids, by which latency is measured, survive either way."""

from __future__ import annotations

import audioop
import base64
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is a folder of the repository

from benchmarks.loadgen import MAGIC, ULAW_FRAME, CallSpec, LoadGenerator, TwilioCall


class _Recording(TwilioCall):
    def __init__(self, gen: LoadGenerator, index: int) -> None:
        super().__init__(gen, CallSpec(index, f"c{index}", "t", f"CA{index}", f"MZ{index}"), "127.0.0.1")
        self.sent: list[str] = []

    def send_text(self, text: str) -> None:  # type: ignore[override]
        self.sent.append(text)


def _frames(kind: str, n: int = 50) -> list[bytes]:
    gen = LoadGenerator()
    gen.set_caller_audio(kind)
    call = _Recording(gen, 3)
    for _ in range(n):
        call.send_media()
    return [base64.b64decode(json.loads(t)["media"]["payload"]) for t in call.sent]


async def test_silent_callers_send_silence_after_the_id() -> None:  # async: an endpoint needs a running loop
    frames = _frames("silence")
    assert all(len(f) == ULAW_FRAME and f[:4] == MAGIC and set(f[8:]) == {0xFF} for f in frames)


async def test_talking_callers_send_speech_after_the_id() -> None:
    frames = _frames("speech")
    assert all(len(f) == ULAW_FRAME and f[:4] == MAGIC for f in frames)
    ids = [int.from_bytes(f[4:8], "little") for f in frames]
    assert ids == list(range(len(frames)))  # each frame still carries its own id
    levels = [audioop.rms(audioop.ulaw2lin(f[8:], 2), 2) for f in frames]
    assert sum(level >= 300 for level in levels) > len(levels) // 2  # loud enough for the beep detector to test
    assert len({f[8:] for f in frames}) == len(frames)  # the speech moves on from frame to frame


def test_unknown_caller_audio_is_refused() -> None:
    with pytest.raises(ValueError, match="caller audio"):
        LoadGenerator().set_caller_audio("music")
