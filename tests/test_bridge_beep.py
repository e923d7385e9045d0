"""The voicemail beep detector (beep.py): beeps at the usual pitches are heard after ~200 ms; hold music,
speech, DTMF tones and silence are not beeps."""

from __future__ import annotations

import pytest
from haggle_gateway import dtmf
from haggle_gateway.beep import BeepDetector
from haggle_sim import audio


def heard_at_ms(ulaw: bytes) -> float | None:
    detector = BeepDetector()
    for start in range(0, len(ulaw), 160):  # 20 ms media frames
        if detector.feed(ulaw[start:start + 160]):
            return (start + 160) / 8
    return None


@pytest.mark.parametrize("hz", [440.0, 1000.0, 1400.0, 2000.0])
def test_a_beep_is_heard_after_about_200_ms(hz: float) -> None:
    at = heard_at_ms(audio.silence(300) + audio.beep(500, hz))
    assert at is not None and 480 <= at <= 600


def test_a_short_blip_is_not_a_beep() -> None:
    assert heard_at_ms(audio.beep(120)) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_music_and_speech_are_not_beeps(seed: int) -> None:
    assert heard_at_ms(audio.music(20_000, seed=seed)) is None
    assert heard_at_ms(audio.speech_like(10_000, seed=seed)) is None


def test_dtmf_and_silence_are_not_beeps() -> None:
    assert heard_at_ms(dtmf.tones("0123456789*#")) is None
    assert heard_at_ms(audio.silence(2000)) is None


def test_heard_once() -> None:
    detector = BeepDetector()
    clip = audio.beep(600)
    hits = [detector.feed(clip[i:i + 160]) for i in range(0, len(clip), 160)]
    assert hits.count(True) == 1
