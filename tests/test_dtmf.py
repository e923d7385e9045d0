"""DTMF tones in mu-law: generation and the Goertzel decoder (pure functions, no I/O)."""

from __future__ import annotations

import audioop
import math
import random
from array import array

import pytest
from haggle_gateway import dtmf
from haggle_sim import audio


def test_every_key_round_trips() -> None:
    keys = "0123456789*#ABCD"
    assert dtmf.decode(dtmf.tones(keys)) == keys


def test_tones_have_the_documented_timing() -> None:
    one = dtmf.tones("5")
    assert len(one) == (dtmf.TONE_MS + dtmf.GAP_MS) * 8
    assert one[dtmf.TONE_MS * 8:] == audio.silence(dtmf.GAP_MS)
    assert dtmf.duration_ms("123") == 3 * 180
    assert len(dtmf.tones("123")) == dtmf.duration_ms("123") * 8


def test_both_frequencies_at_their_levels() -> None:
    low, high = dtmf.frequencies("1")
    assert (low, high) == (697.0, 1209.0)
    block = [float(x) for x in array("h", audioop.ulaw2lin(dtmf.tone("1", 100), 2))[200:200 + dtmf.BLOCK]]
    rows = dtmf._goertzel_power(block, dtmf._ROW_COEFFS)
    cols = dtmf._goertzel_power(block, dtmf._COL_COEFFS)
    ratio_db = 10 * math.log10(cols[0] / rows[0])
    assert 1.5 < ratio_db < 2.5  # the high tone 2 dB above the low one


def test_repeated_digits_and_20ms_framing_inside_speech() -> None:
    decoder = dtmf.DtmfDecoder()
    stream = audio.speech_like(1200, seed=2) + audio.silence(60) + dtmf.tones("1199#") + audio.speech_like(800)
    found = "".join(decoder.feed(frame) for frame in audio.frames(stream))
    assert found == "1199#"
    assert decoder.digits == "1199#"


def test_odd_chunking_is_the_same_as_one_block() -> None:
    stream = dtmf.tones("2580")
    decoder = dtmf.DtmfDecoder()
    sizes = [7, 333, 1, 160, 999]
    pos, found = 0, ""
    while pos < len(stream):
        size = sizes[pos % len(sizes)]
        found += decoder.feed(stream[pos:pos + size])
        pos += size
    assert found == "2580"


@pytest.mark.parametrize(("low", "high", "accepted"), [
    (-7.0, -5.0, True),  # the default 2 dB twist
    (-9.5, -2.5, True),  # high 7 dB above low
    (-5.0, -8.0, True),  # low 3 dB above high
    (-12.0, -2.0, False),  # high 10 dB above low: too much twist
    (-3.0, -9.0, False),  # low 6 dB above high: too much reverse twist
    (-36.0, -34.0, False),  # below the floor
])
def test_twist_and_level_limits(low: float, high: float, accepted: bool) -> None:
    found = dtmf.decode(dtmf.tones("159#", low_dbm0=low, high_dbm0=high))
    assert (found == "159#") is accepted
    if not accepted:
        assert found == ""


def test_tones_survive_line_noise() -> None:
    rng = random.Random(7)
    tones = dtmf.tones("42")
    noise = array("h", [int(rng.gauss(0, 800)) for _ in range(len(tones))]).tobytes()
    noisy = audioop.lin2ulaw(audioop.add(audioop.ulaw2lin(tones, 2), noise, 2), 2)
    assert dtmf.decode(noisy) == "42"


@pytest.mark.parametrize("seed", range(4))
def test_speech_music_beep_and_noise_are_not_digits(seed: int) -> None:
    rng = random.Random(seed)
    noise = audioop.lin2ulaw(array("h", [int(rng.gauss(0, 4000)) for _ in range(16000)]).tobytes(), 2)
    for signal in (audio.speech_like(6000, seed=seed), audio.music(8000, seed=seed), audio.beep(), noise):
        assert dtmf.decode(signal) == ""


@pytest.mark.parametrize("bad", ["", "12x", "1 2", "+1", "e"])
def test_bad_digits_get_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="DTMF digits"):
        dtmf.tones(bad)


def test_lower_case_keys_are_accepted() -> None:
    assert dtmf.decode(dtmf.tones("abcd")) == "ABCD"
