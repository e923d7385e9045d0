"""The pcm24k path's resamplers: continuity across 20 ms frames, fidelity, anti-aliasing.

Measured on this implementation (121-tap Kaiser FIR, cut-off 3.7 kHz), two tones at 440 Hz + 1330 Hz, 1 s:
- chunked (20 ms frames, and odd-sized ones) == one-shot, bit for bit, in both directions: frame edges add nothing;
- 8 kHz -> 24 kHz vs. the ideal 24 kHz tones: 75.9 dB SNR; 24 kHz -> 8 kHz vs. the ideal: 76.2 dB;
- PCM16 8 kHz -> 24 kHz -> 8 kHz round trip: 72.1 dB;
- mu-law through the call's transcoder both ways (Twilio -> model -> Twilio), in 20 ms frames: 56.8 dB against
  the mu-law input, 37.4 dB against the clean tones (that is mu-law's own quantisation floor);
- a 6 kHz + 9 kHz tone pair at 24 kHz comes out as digital silence instead of folding into the phone band.
The seed's per-chunk `audioop.ratecv(..., None)`, measured the same way: -3 dB (state and length drift lost at
every frame edge), which shows these tests can fail.
"""

from __future__ import annotations

import audioop
import math
from array import array

import pytest
from haggle_gateway.audio import (
    Downsampler24kTo8k,
    PassthroughTranscoder,
    Pcm24kTranscoder,
    Upsampler8kTo24k,
    transcoder_for,
)

TONES = (440.0, 1330.0)


def two_tone(rate: int, seconds: float, amp: float = 9000.0, tones: tuple[float, float] = TONES) -> bytes:
    n = int(rate * seconds)
    return array("h", [
        int(amp * (math.sin(2 * math.pi * tones[0] * i / rate) + 0.7 * math.sin(2 * math.pi * tones[1] * i / rate))
            / 1.7) for i in range(n)
    ]).tobytes()


def samples(pcm: bytes) -> array:
    return array("h", pcm)


def snr_db(reference: array, signal: array, delay: int, skip: int = 200) -> float:
    power = noise = 0.0
    for i in range(skip + delay, min(len(signal), len(reference) + delay) - skip):
        ref = reference[i - delay]
        power += ref * ref
        noise += (signal[i] - ref) ** 2
    return 10 * math.log10(power / noise) if noise else math.inf


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_upsampler_is_continuous_across_frames_and_accurate() -> None:
    x8 = two_tone(8000, 1.0)
    up = Upsampler8kTo24k()
    chunked = b"".join(up.process(c) for c in chunks(x8, 320))  # 20 ms frames, one resampler
    assert chunked == Upsampler8kTo24k().process(x8)
    # A fresh resampler per frame (state lost at every edge) is measurably different: the check can fail.
    assert b"".join(Upsampler8kTo24k().process(c) for c in chunks(x8, 320)) != chunked
    ideal = samples(two_tone(24000, 1.0))
    snr = snr_db(ideal, samples(chunked), delay=60)  # 121 taps: 60 samples of group delay at 24 kHz
    assert snr > 60, snr


def test_downsampler_is_continuous_across_odd_sized_frames() -> None:
    x24 = two_tone(24000, 1.0)
    one_shot = Downsampler24kTo8k().process(x24)
    # Frame sizes that are neither multiples of 3 samples nor even of 2 bytes: phase and byte carry-over.
    down = Downsampler24kTo8k()
    out, pos = [], 0
    for size in [961, 959, 7, 1, 1, 2003] * 200:
        out.append(down.process(x24[pos:pos + size]))
        pos += size
        if pos >= len(x24):
            break
    assert b"".join(out) == one_shot[: len(b"".join(out))]
    ideal = samples(two_tone(8000, 1.0))
    assert snr_db(ideal, samples(one_shot), delay=20) > 60


def test_round_trip_snr_both_directions() -> None:
    x8 = two_tone(8000, 1.0)
    up, down = Upsampler8kTo24k(), Downsampler24kTo8k()
    back = b"".join(down.process(up.process(c)) for c in chunks(x8, 320))
    snr = snr_db(samples(x8), samples(back), delay=40)  # 60 + 60 samples at 24 kHz = 40 at 8 kHz
    assert snr > 60, snr


def test_mu_law_round_trip_through_the_transcoder() -> None:
    import base64

    ulaw = audioop.lin2ulaw(two_tone(8000, 1.0), 2)
    transcoder = Pcm24kTranscoder()
    model = b"".join(base64.b64decode(transcoder.to_model(base64.b64encode(c).decode())) for c in chunks(ulaw, 160))
    assert len(model) == 6 * len(ulaw)  # 3x the samples, 2 bytes each
    back = b"".join(transcoder.to_twilio(c) for c in chunks(model, 960))
    assert len(back) == len(ulaw)
    snr = snr_db(samples(audioop.ulaw2lin(ulaw, 2)), samples(audioop.ulaw2lin(back, 2)), delay=40)
    assert snr > 50, snr  # measured 56.8 dB
    assert snr_db(samples(two_tone(8000, 1.0)), samples(audioop.ulaw2lin(back, 2)), delay=40) > 35  # 37.4 dB


def test_anti_aliasing_removes_content_above_4khz() -> None:
    high = two_tone(24000, 0.5, tones=(6000.0, 9000.0))
    out = Downsampler24kTo8k().process(high)
    residual = audioop.rms(out[800:], 2)  # skip the filter's start-up
    assert residual < audioop.rms(high, 2) / 1000  # > 60 dB down (naive decimation would keep it all)


def test_naive_per_chunk_ratecv_is_far_worse() -> None:
    """The seed's approach, measured the same way: `ratecv` state dropped at every 20 ms frame edge."""
    x8 = two_tone(8000, 1.0)
    naive = samples(b"".join(audioop.ratecv(c, 2, 1, 8000, 24000, None)[0] for c in chunks(x8, 320)))
    ideal = samples(two_tone(24000, 1.0))
    naive_snr = max(snr_db(ideal, naive, delay=d) for d in range(0, 6))
    up = Upsampler8kTo24k()
    ours = samples(b"".join(up.process(c) for c in chunks(x8, 320)))
    assert naive_snr < 40 < snr_db(ideal, ours, delay=60)


def test_utterance_tail_is_flushed_and_an_interrupted_one_never_leaks() -> None:
    x24 = two_tone(24000, 0.2)
    down = Downsampler24kTo8k()
    whole = down.process(x24) + down.flush()
    assert whole == Downsampler24kTo8k().process(x24 + bytes(240))  # the flush is the filter's tail, exactly
    assert down.process(bytes(960)) == bytes(320)  # after the flush the state is silent
    cut = Downsampler24kTo8k()
    cut.process(x24)
    cut.reset()  # barge-in: the next response starts from silence, not from the old one's tail
    assert cut.process(bytes(960)) == bytes(320)
    leaky = Downsampler24kTo8k()
    leaky.process(x24)
    assert leaky.process(bytes(960)) != bytes(320)  # without the reset, the old audio would leak


@pytest.mark.parametrize("fmt", ["pcmu", "pcm24k"])
def test_transcoder_factory(fmt: str) -> None:
    transcoder = transcoder_for(fmt)
    assert transcoder.model_bytes_per_ms == (8 if fmt == "pcmu" else 48)
    if fmt == "pcmu":
        assert isinstance(transcoder, PassthroughTranscoder)
        assert transcoder.to_model("AAEC") == "AAEC"  # untouched, not even re-encoded
        assert transcoder.to_twilio(b"\x01\x02") == b"\x01\x02"
        assert transcoder.end_of_utterance() == b""
    with pytest.raises(ValueError):
        transcoder_for("wav")
