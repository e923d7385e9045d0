"""Call-bridge scenarios on virtual time: a real `CallBridge` against the in-process fakes (haggle_sim.fakes).

Greeting, silence, barge-in, goodbye and call phases are decided by time; here time is virtual, so each scenario
is deterministic and takes milliseconds. The same behaviour over real sockets is covered by test_gateway_calls.py.
"""

from __future__ import annotations

import audioop
import dataclasses
import math
from typing import Any

from haggle_contracts import events as ev
from haggle_gateway.phases import CallPhase
from haggle_gateway.settings import GatewaySettings
from haggle_sim.fakes import BridgeRig

SETTINGS = GatewaySettings(public_base_url="http://127.0.0.1:9", twilio_account_sid="AC" + "0" * 32,
                           twilio_auth_token="token", greeting_wait_s=1.5, greeting_auto_grace_s=0.8,
                           silence_timeout_s=20.0, hangup_fallback_s=10.0, transcript_settle_s=1.0)


def tone(ms: int, amplitude: int = 8000) -> bytes:
    """mu-law 8 kHz: a 300 Hz tone loud enough to count as voice."""
    samples = b"".join(int(amplitude * math.sin(2 * math.pi * 300 * i / 8000)).to_bytes(2, "little", signed=True)
                       for i in range(ms * 8))
    return audioop.lin2ulaw(samples, 2)


def settings(**changes: Any) -> GatewaySettings:
    return dataclasses.replace(SETTINGS, **changes)


async def test_silent_callee_gets_the_greeting_after_the_wait() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await rig.advance(1.4)
        assert not rig.realtime.of_type("conversation.item.create")
        await rig.advance(0.2)
        forced = rig.realtime.of_type("conversation.item.create")
        assert len(forced) == 1 and "Joe's Plumbing" in str(forced[0])
        assert rig.bridge.turns.gate.kind == "sent"


async def test_greeting_never_starts_over_a_hello() -> None:
    """Local voice energy keeps pushing the greeting back; the server's answer to the hello is the greeting."""
    async with BridgeRig(SETTINGS) as rig:
        for _ in range(10):  # two seconds of "Hello? ... who is this?"
            rig.link.caller_audio(tone(200))
            await rig.advance(0.2)
        assert not rig.realtime.of_type("conversation.item.create")
        rig.realtime.speech("u1", started=False)
        rig.realtime.response("r1", "a1", "Hi, is this Joe's Plumbing?")
        await rig.advance(0.1)
        assert rig.bridge.turns.gate.kind == "auto"
        assert rig.bridge.phases.phase is CallPhase.CONVERSATION
        await rig.advance(3.0)
        assert not rig.realtime.of_type("conversation.item.create")


async def test_server_that_does_not_answer_the_hello_gets_our_greeting_after_the_grace() -> None:
    async with BridgeRig(SETTINGS) as rig:
        rig.realtime.speech("u1")
        await rig.advance(3.0)
        assert not rig.realtime.of_type("conversation.item.create")  # never while they speak
        rig.realtime.speech("u1", started=False)
        await rig.advance(0.7)
        assert not rig.realtime.of_type("conversation.item.create")
        await rig.advance(0.2)
        assert len(rig.realtime.of_type("conversation.item.create")) == 1


async def test_silence_timeout_ends_the_call() -> None:
    async with BridgeRig(settings(silence_timeout_s=5.0)) as rig:
        ended = await rig.ended_with(limit_s=10)
        assert ended.reason == "silence_timeout"
        assert rig.hangups == ["CA1"]
        assert 5.0 <= ended.duration_s <= 5.2


async def test_barge_in_clears_and_truncates_at_what_was_played() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await rig.advance(1.6)
        rig.realtime.response("r1", "a1", "Hi, is this Joe's Plumbing? I have a leak.", audio_ms=3000, done=False)
        await rig.advance(1.0)  # a second of the line has played
        rig.realtime.speech("u2")
        await rig.advance(0.05)
        assert len(rig.link.of_kind("clear")) == 1
        truncate = rig.realtime.of_type("conversation.item.truncate")
        assert len(truncate) == 1
        assert 900 <= truncate[0]["audio_end_ms"] <= 1100
        assert rig.realtime.of_type("response.cancel")
        # What the model still streams for the cut response never reaches the line.
        before = rig.link.media_ms
        rig.realtime.audio("r1", "a1", 500)
        await rig.advance(0.1)
        assert rig.link.media_ms == before
        assert rig.bridge.turns.dropped_deltas >= 1


async def test_hang_up_only_after_the_goodbye_has_played() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await rig.advance(1.6)
        rig.realtime.response("r1", "a1", "Great, that works for us. Thank you, goodbye!", audio_ms=2000, done=False)
        rig.realtime.tool_call("end_call", {"reason": "agreed"}, call_id="c1", response_id="r1")
        rig.realtime.finish("r1", "a1", "Great, that works for us. Thank you, goodbye!")
        await rig.advance(1.0)
        assert not rig.ended and rig.link.queued_ms > 0
        ended = await rig.ended_with(limit_s=3)
        assert ended.reason == "end_call"
        assert rig.link.queued_ms == 0 and rig.link.media_ms >= 2000


async def test_end_call_without_response_id_waits_for_its_goodbye() -> None:
    """xAI may send the tool call without `response_id`, before the goodbye's last audio (docs/xai-realtime.md)."""
    async with BridgeRig(SETTINGS) as rig:
        await rig.advance(1.6)
        rig.realtime.response("r1", "a1", "Thank you, goodbye!", audio_ms=600, done=False)
        rig.realtime.tool_call("end_call", {"reason": "agreed"}, call_id="c1")
        await rig.advance(0.05)
        assert not rig.link.of_kind("mark") or all("bye" not in m["mark"]["name"] for m in rig.link.of_kind("mark"))
        rig.realtime.audio("r1", "a1", 1400)  # the rest of the goodbye arrives after the tool call
        rig.realtime.finish("r1", "a1", "Thank you, goodbye!")
        ended = await rig.ended_with(limit_s=5)
        assert ended.reason == "end_call"
        assert rig.link.media_ms >= 2000 and rig.link.queued_ms == 0


async def test_callee_speaking_over_the_goodbye_postpones_the_hang_up() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await rig.advance(1.6)
        rig.realtime.response("r1", "a1", "Goodbye!", audio_ms=2000, done=False)
        rig.realtime.tool_call("end_call", {"reason": "agreed"}, call_id="c1", response_id="r1")
        rig.realtime.finish("r1", "a1", "Goodbye!")
        await rig.advance(0.5)
        rig.realtime.speech("u2")  # "wait, one more thing"
        await rig.advance(3.0)
        assert not rig.ended
        rig.realtime.speech("u2", started=False)
        rig.realtime.response("r2", "a2", "Sure. Goodbye!", audio_ms=500, done=False)
        rig.realtime.tool_call("end_call", {"reason": "agreed"}, call_id="c2", response_id="r2")
        rig.realtime.finish("r2", "a2", "Sure. Goodbye!")
        assert (await rig.ended_with(limit_s=3)).reason == "end_call"


async def test_quote_tool_publishes_a_quote() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await rig.advance(1.6)
        rig.realtime.tool_call("record_quote", {"price": 175, "price_type": "flat", "agreed": True}, call_id="q1",
                               response_id="r1")
        await rig.advance(0.1)
        quotes = rig.publisher.of_type(ev.QuoteRecorded)
        assert [(q.price, q.agreed) for q in quotes] == [(175.0, True)]
        outputs = rig.realtime.of_type("conversation.item.create")
        assert any(o["item"].get("call_id") == "q1" for o in outputs)


async def test_lost_realtime_session_is_reopened_with_the_conversation() -> None:
    from haggle_sim.fakes import FakeRealtime

    fresh = FakeRealtime()

    async def reopen(resumed: bool) -> FakeRealtime:
        assert resumed
        return fresh

    async with BridgeRig(SETTINGS, reopen=reopen) as rig:
        await rig.advance(1.6)
        rig.realtime.response("r1", "a1", "Hi, is this Joe's Plumbing?", audio_ms=400)
        rig.realtime.speech("u1")
        rig.realtime.speech("u1", started=False)
        rig.realtime.user_transcript("u1", "Yes it is.")
        await rig.advance(2.0)
        rig.realtime.lose()
        await rig.advance(0.1)
        replayed = [e["item"]["content"][0]["text"] for e in fresh.of_type("conversation.item.create")]
        assert replayed == ["Hi, is this Joe's Plumbing?", "Yes it is."]
        assert fresh.of_type("response.create")  # the callee spoke last: our turn
        assert not rig.ended


# ------------------------------------------------------------------------------------------------ xAI as it is


async def test_audio_faster_than_real_time_is_held_and_released_about_a_second_ahead() -> None:
    """Ten seconds of speech arriving at once (10x and more): Twilio never has more than ~1 s queued, all of it
    plays, and a barge-in clears only that second (a small burst of echoes)."""
    async with BridgeRig(SETTINGS) as rig:
        await rig.advance(1.6)
        rig.realtime.response("r1", "a1", "A long explanation.", audio_ms=10_000, done=False)
        await rig.advance(0.05)
        assert rig.link.queued_ms <= 1020
        await rig.advance(4.0)
        assert 2500 <= rig.link.media_ms <= 5100  # released as it plays, not all at once
        assert rig.bridge.out.max_queued_ms <= 1020
        assert rig.link.queued_marks <= 52  # what the clear below returns at once
        rig.realtime.speech("u2")
        await rig.advance(0.05)
        assert len(rig.link.of_kind("clear")) == 1
        assert rig.link.media_ms < 6000  # the rest was never sent
        assert not rig.ended


async def test_mark_echoes_never_count_against_the_rate_guard() -> None:
    """A guard of 20 msg/s (burst 40) and a 6 s line at 20 ms chunks: 300 echoes plus a clear's burst pass; the
    callee's own frames are still limited."""
    async with BridgeRig(SETTINGS, max_messages_per_s=20) as rig:
        await rig.advance(1.6)
        rig.realtime.response("r1", "a1", "A long line.", audio_ms=6000, done=False)
        await rig.advance(3.0)
        rig.realtime.speech("u2")  # barge-in: every pending mark comes back at once
        await rig.advance(0.1)
        rig.realtime.speech("u2", started=False)
        rig.realtime.response("r2", "a2", "Sorry, go ahead.", audio_ms=3000)
        await rig.advance(4.0)
        assert not rig.ended
        for _ in range(100):  # invented mark names are the peer's traffic
            rig.link.inject({"event": "mark", "streamSid": rig.link.stream_sid, "mark": {"name": "g0-99999"}})
        assert (await rig.ended_with(limit_s=2)).reason == "protocol_error"


async def test_revised_input_transcript_replaces_the_line() -> None:
    async with BridgeRig(SETTINGS) as rig:
        rig.realtime.speech("u1")
        rig.realtime.speech("u1", started=False)
        rig.realtime.user_transcript("u1", "It's two hundred.")
        await rig.advance(1.5)
        rig.realtime.user_transcript("u1", "It's two hundred fifty.")  # after `completed`
        rig.realtime.user_transcript("u1", "It's two hundred fifty.")  # repeated: no new revision
        await rig.advance(0.5)
        lines = rig.publisher.of_type(ev.UtteranceTranscribed)
        assert [(u.utterance_id, u.seq, u.text, u.revision) for u in lines] == [
            ("u1", 0, "It's two hundred.", 0), ("u1", 0, "It's two hundred fifty.", 1)]
        assert len({u.event_id for u in lines}) == 2


def test_the_fold_keeps_the_last_revision_once() -> None:
    from datetime import UTC, datetime

    from haggle_contracts import state as st

    job = ev.JobStarted(event_id="j", job_id="job1", problem="leak", zip_code="94110", max_price=180.0,
                        providers=[ev.ProviderSpec(id="p1", service_provider="Joe", phone_number="+14155550101")])
    base: dict[str, Any] = dict(job_id="job1", provider_id="p1", attempt=0, call_sid="CA1", utterance_id="u1",
                                seq=0, role=ev.Role.USER, spoken_at=datetime(2026, 1, 1, tzinfo=UTC))
    first = ev.UtteranceTranscribed(event_id="utt-CA1-u1", text="two hundred", **base)
    revised = ev.UtteranceTranscribed(event_id="utt-CA1-u1-r1", text="two fifty", revision=1, **base)
    for order in ([first, revised], [revised, first]):
        states = st.fold_job([job, *order])
        assert [u.text for u in states["p1"].transcript] == ["two fifty"]
