"""Whole calls through the media gateway, over real sockets: Twilio stand-in <-> gateway <-> realtime stand-in.

Each test dials like the dispatcher (KV context, SDK `calls.create`, CallSid stored), lets the simulated
provider and the simulated model talk through the gateway, and asserts on what each side saw and on the
events published to NATS.
"""

from __future__ import annotations

import audioop
import logging
import math

import pytest
from haggle_contracts import events as ev
from haggle_sim.personas import Persona, PersonaBook, ToolCall, Turn, negotiation
from test_gateway_harness import GatewayHarness

log = logging.getLogger(__name__)


def _utterances(h: GatewayHarness, call_sid: str) -> list[ev.UtteranceTranscribed]:
    return sorted(h.of(ev.UtteranceTranscribed, call_sid), key=lambda u: u.seq)


async def test_negotiation_call_end_to_end(nc) -> None:  # type: ignore[no-untyped-def]
    persona = negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175, ms_per_char=12)
    async with GatewayHarness(nc, PersonaBook([persona])) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)

        assert ended.reason == "end_call"
        # The hang-up came through REST, once, and only after every byte of the goodbye had played.
        assert call.updates == [{"Status": "completed"}]
        stream = call.stream
        assert stream is not None and not stream.violations
        assert stream.cleared_bytes == 0
        assert stream.played_bytes == stream.agent_bytes_received > 0
        bye = [t for t, name in stream.marks_echoed if name.endswith("-bye")]
        assert len(bye) == 1 and bye[0] <= call.ended_at  # type: ignore[operator]

        # Greeting: the agent's first audio came after the provider's "Hello?" had ended.
        first_media = stream.events("media")[0].at
        hello = stream.provider_lines[0]
        assert hello.text == "Hello?" and hello.ended_at is not None
        assert first_media >= hello.ended_at
        session = h.realtime.sessions[0]
        assert session.received("conversation.item.create") == [
            e for e in session.received("conversation.item.create") if e["item"]["type"] == "function_call_output"
        ]  # no forced greeting: the model answered the hello itself

        # Transcript: every line once, final text (not the partial snapshot), in spoken order, seq 0..n-1.
        utterances = _utterances(h, ctx.call_sid)
        expected = [(("assistant" if t.speaker == "agent" else "user"),
                     t.text.replace("{business}", "Joe's Plumbing")) for t in persona.turns]
        assert [(u.role.value, u.text) for u in utterances] == expected
        assert [u.seq for u in utterances] == list(range(len(expected)))
        assert len({u.utterance_id for u in utterances}) == len(utterances)
        assert ended.utterances == len(expected)
        # Published as the call went, not at the end: a gateway crash would lose none of these.
        first_utterance = h.arrived_at[f"utt-{ctx.call_sid}-{utterances[0].utterance_id}"]
        assert first_utterance < stream.provider_lines[-1].started_at
        ids = [e.event_id for e in h.events]
        assert len(ids) == len(set(ids))
        assert ids.index(f"end-{ctx.call_sid}") > max(ids.index(f"utt-{ctx.call_sid}-{u.utterance_id}")
                                                       for u in utterances)

        # Tools: both quotes recorded; the status callbacks became events.
        quotes = h.of(ev.QuoteRecorded, ctx.call_sid)
        assert [(q.price, q.agreed) for q in quotes] == [(200.0, None), (175.0, True)]
        statuses = [e.status for e in h.of(ev.CallStatusChanged, ctx.call_sid)]
        for status in ("initiated", "ringing", "in-progress"):
            assert status in statuses
        await h.wait_for_event(lambda e: isinstance(e, ev.CallStatusChanged) and e.status == "completed")
        amd = h.of(ev.MachineDetected, ctx.call_sid)
        assert [a.answered_by for a in amd] == ["human"]
        assert h.realtime.connections == 1
        assert h.service.registry.stats["accepted"] == 1
        assert h.service.registry.prewarms.opened == 1


def _barge_in_persona() -> Persona:
    long_line = ("I have a leaking kitchen faucet that drips all night, it has been going on for about a week "
                 "now and the handle is getting loose too, so I am looking for an estimate to fix it.")
    return Persona(
        business="Bay Pipe Pros",
        phone="+14155550102",
        ms_per_char=14,
        turns=(
            Turn("provider", "Hello?"),
            Turn("agent", "Hi, is this {business}?"),
            Turn("provider", "Yes it is."),
            Turn("agent", long_line),
            Turn("provider", "Sorry, let me stop you, what is it?", barge_in_after_ms=900),
            Turn("agent", "A leaking faucet. What would it cost?"),
            Turn("provider", "About two hundred."),
            Turn("agent", "I understand. Thanks for your time, goodbye!", tools=(ToolCall("end_call", {}),)),
        ),
    )


async def test_barge_in_clears_twilio_fast_and_drops_the_rest_of_the_response(nc) -> None:  # type: ignore[no-untyped-def]
    persona = _barge_in_persona()
    async with GatewayHarness(nc, PersonaBook([persona]), realtime={"late_deltas_after_cancel": 2}) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        stream, session = call.stream, h.realtime.sessions[0]
        assert stream is not None and not stream.violations
        assert ended.reason == "end_call"

        clears = stream.events("clear")
        assert len(clears) == 1
        cleared_at = clears[0].at
        speech_started = max(t for t in session.speech_started_at if t <= cleared_at)
        latency_ms = (cleared_at - speech_started) * 1000  # logged below; latency is measured by benchmarks
        # Fast enough that it mattered: the clear reached Twilio while the interrupted line was still playing,
        # so it dropped audio the provider would otherwise have heard (about 1.5 s of the long line was left).
        assert stream.cleared_bytes > 0, f"clear came {latency_ms:.0f} ms after speech_started, after the line"

        interrupted = next(r for r in session.responses if r["status"] == "cancelled")
        following = session.responses[session.responses.index(interrupted) + 1]
        # The stand-in kept streaming the cancelled response for a moment (as real servers do) ...
        late = [t for t, e in session.events_sent if e.get("type") == "response.output_audio.delta"
                and e.get("response_id") == interrupted["id"] and t > speech_started]
        assert late, "the test must exercise late deltas"
        # ... and none of it reached Twilio: after the clear, audio only resumes with the next response.
        after_clear = [m.at for m in stream.events("media") if m.at > cleared_at]
        assert after_clear and min(after_clear) >= following["created_at"]

        # Truncation at what was actually played (never beyond what was sent).
        truncates = session.received("conversation.item.truncate")
        assert len(truncates) == 1 and truncates[0]["item_id"] == interrupted["item_id"]
        # What Twilio played of the item, by the stand-in's own counters: Twilio's buffer was idle (the provider
        # had just spoken), so everything sent from the item's start until the clear, less what the clear dropped.
        sent_bytes = sum(len(m.payload or b"") for m in stream.events("media")
                         if interrupted["created_at"] <= m.at <= cleared_at)
        played_ms = (sent_bytes - stream.cleared_bytes) / 8
        end_ms = truncates[0]["audio_end_ms"]
        assert end_ms <= interrupted["audio_ms_sent"]
        # Credited only from mark echoes, so never past what played; short of it by the chunk in flight and the
        # moments between the gateway's interrupt and Twilio's clear (a generous bound: load stretches those).
        assert 0 < end_ms <= played_ms + 1 and end_ms > played_ms - 1000, (truncates[0], played_ms)

        utterances = _utterances(h, ctx.call_sid)
        cut = next(u for u in utterances if u.utterance_id == interrupted["item_id"])
        assert cut.interrupted and cut.role == ev.Role.ASSISTANT
        assert [u.seq for u in utterances] == list(range(len(utterances)))
        log.info("barge-in: clear %.1f ms after speech_started", latency_ms)  # measured ~20 ms on loopback


def _quiet_persona() -> Persona:
    """Picks up and says nothing until spoken to."""
    return Persona(
        business="Quiet Plumbing",
        phone="+14155550104",
        ms_per_char=10,
        turns=(
            Turn("agent", "Hi, is this {business}?"),
            Turn("provider", "Yes, this is Quiet Plumbing."),
            Turn("agent", "I understand. Thanks for your time, goodbye!", tools=(ToolCall("end_call", {}),)),
        ),
    )


@pytest.mark.parametrize("mode", ["force_message", "response"])
async def test_greeting_opens_after_silence_with_the_fixed_line(nc, mode: str) -> None:  # type: ignore[no-untyped-def]
    persona = _quiet_persona()
    async with GatewayHarness(nc, PersonaBook([persona]), greeting_mode=mode) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        stream = call.stream
        assert stream is not None and stream.connected_at is not None
        wait_s = stream.events("media")[0].at - stream.connected_at
        assert 1.45 <= wait_s <= 1.5 + 5, wait_s  # after the 1.5 s of silence; how soon after depends on load
        session = h.realtime.sessions[0]
        forced = [e["item"] for e in session.received("conversation.item.create")
                  if e["item"]["type"] == "force_message"]
        if mode == "force_message":
            assert [f["content"][0]["text"] for f in forced] == ["Hi, is this Quiet Plumbing?"]
            assert forced[0]["interruptible"] is True
        else:  # the model speaks the opener from its instructions
            assert forced == [] and len(session.received("response.create")) == 1
        assert ended.reason == "end_call"
        texts = [u.text for u in _utterances(h, ctx.call_sid)]
        assert texts[0] == "Hi, is this Quiet Plumbing?"


async def test_upfront_disclosure_is_part_of_a_non_interruptible_greeting(nc) -> None:  # type: ignore[no-untyped-def]
    persona = _quiet_persona()
    async with GatewayHarness(nc, PersonaBook([persona]), ai_disclosure="upfront") as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        await h.wait_ended(ctx.call_sid)
        session = h.realtime.sessions[0]
        forced = [e["item"] for e in session.received("conversation.item.create")
                  if e["item"]["type"] == "force_message"]
        assert len(forced) == 1
        assert forced[0]["interruptible"] is False
        text = forced[0]["content"][0]["text"]
        assert text.startswith("Hi, is this Quiet Plumbing?") and "AI assistant" in text
        assert "AI assistant" in session.instructions


def _snr_db(reference: list[int], signal: list[int], max_lag: int = 60) -> float:
    """Best-aligned SNR of `signal` against `reference` (16-bit samples), over the overlap."""
    best = -math.inf
    for lag in range(max_lag + 1):
        pairs = list(zip(reference[: len(reference) - lag], signal[lag:], strict=False))[200:-200]
        power = sum(r * r for r, _ in pairs)
        noise = sum((s - r) ** 2 for r, s in pairs)
        if noise and power:
            best = max(best, 10 * math.log10(power / noise))
    return best


async def test_pcm24k_mode_end_to_end(nc) -> None:  # type: ignore[no-untyped-def]
    from haggle_sim.audio import speech_like

    persona = negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175, ms_per_char=12)
    async with GatewayHarness(nc, PersonaBook([persona]), audio_format="pcm24k") as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        session = h.realtime.sessions[0]
        for direction in ("input", "output"):
            assert session.session["audio"][direction]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert ended.reason == "end_call"
        assert len(_utterances(h, ctx.call_sid)) == len(persona.turns)  # the VAD heard every provider line

        # Byte-exact rate: 8 mu-law bytes per ms of model audio plus the filter's 5 ms tail (40 bytes) per
        # response, with no drift across chunks.
        stream = call.stream
        assert stream is not None
        expected_ms = [persona.speech_ms(r["text"]) for r in session.responses]
        assert abs(stream.agent_bytes_received - sum(8 * ms + 40 for ms in expected_ms)) <= 2 * len(expected_ms)
        # The first response as played on the phone vs. the stand-in's source signal.
        source = audioop.ulaw2lin(speech_like(expected_ms[0], seed=0), 2)
        played = audioop.ulaw2lin(bytes(stream.played_audio[: 8 * expected_ms[0]]), 2)
        ref = [int.from_bytes(source[i:i + 2], "little", signed=True) for i in range(0, len(source), 2)]
        got = [int.from_bytes(played[i:i + 2], "little", signed=True) for i in range(0, len(played), 2)]
        snr = _snr_db(ref, got)
        log.info("pcm24k end to end: SNR %.1f dB", snr)  # measured 67.4 dB
        assert snr > 20.0


async def test_provider_hangup_ends_the_call_without_a_rest_hangup(nc) -> None:  # type: ignore[no-untyped-def]
    base = negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175, ms_per_char=10)
    persona = Persona(business=base.business, phone=base.phone, ms_per_char=10, turns=base.turns,
                      hangup_after_turn=4)
    async with GatewayHarness(nc, PersonaBook([persona])) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        assert ended.reason == "provider_hangup"
        assert call.updates == []
        texts = [u.text for u in _utterances(h, ctx.call_sid)]
        assert texts[:4] == [t.text.replace("{business}", "Joe's Plumbing") for t in persona.turns[:4]]


@pytest.mark.slow
async def test_voicemail_verdict_ends_the_call(nc) -> None:  # type: ignore[no-untyped-def]
    persona = Persona(business="Drain Kings", phone="+14155550105", answer="voicemail", ms_per_char=12)
    async with GatewayHarness(nc, PersonaBook([persona])) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid, timeout_s=15)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        assert ended.reason == "voicemail"
        assert [m.answered_by for m in h.of(ev.MachineDetected, ctx.call_sid)] == ["machine_start"]
        assert call.updates == [{"Status": "completed"}]


async def test_realtime_drop_ends_the_call_and_keeps_the_published_transcript(nc) -> None:  # type: ignore[no-untyped-def]
    persona = negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175, ms_per_char=12)
    async with GatewayHarness(nc, PersonaBook([persona]), realtime={"drop_after_s": 2.5, "max_sessions": 1}) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        assert ended.reason == "realtime_error"
        assert call.updates == [{"Status": "completed"}]
        texts = [u.text for u in _utterances(h, ctx.call_sid)]
        assert texts[:2] == ["Hello?", "Hi, is this Joe's Plumbing?"]


async def test_silence_timeout_hangs_up(nc) -> None:  # type: ignore[no-untyped-def]
    persona = Persona(business="Mute Co", phone="+14155550106", ms_per_char=10,
                      turns=(Turn("provider", "Hello?"), Turn("agent", "Hi, is this {business}?")))
    async with GatewayHarness(nc, PersonaBook([persona]), silence_timeout_s=1.5) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        assert ended.reason == "silence_timeout"
        assert call.updates == [{"Status": "completed"}]


async def test_max_duration_and_shutdown_end_live_calls(nc) -> None:  # type: ignore[no-untyped-def]
    slow = negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175, ms_per_char=30)
    other = negotiation("Bay Pipe Pros", "+14155550102", first_quote=250, counter=150, final=180, ms_per_char=30)
    async with GatewayHarness(nc, PersonaBook([slow, other]), max_call_s=2.0) as h:
        first = await h.dial(slow, provider_id="p1")
        assert first.call_sid is not None
        ended = await h.wait_ended(first.call_sid)
        assert ended.reason == "max_duration" and 1.9 <= ended.duration_s <= 2.0 + 5  # generous: load delays the end
    async with GatewayHarness(nc, PersonaBook([slow, other])) as h:
        second = await h.dial(other, provider_id="p2")
        assert second.call_sid is not None
        await h.wait_for_event(lambda e: isinstance(e, ev.UtteranceTranscribed) and e.call_sid == second.call_sid)
        await h.service.stop(deadline_s=0.5)
        ended = await h.wait_ended(second.call_sid, timeout_s=5)
        assert ended.reason == "shutdown"
        call = await h.twilio.wait_for_call_end(second.call_sid, timeout=10)
        assert call.updates == [{"Status": "completed"}]


async def test_realtime_unavailable_ends_the_call_cleanly(nc) -> None:  # type: ignore[no-untyped-def]
    persona = negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175)
    async with GatewayHarness(nc, PersonaBook([persona]), realtime={"reject_auth": True}) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        assert ended.reason == "realtime_error" and ended.utterances == 0
        assert call.updates == [{"Status": "completed"}]
        assert h.realtime.connections == 2 and h.realtime.sessions == []  # the prewarm, then one retry
