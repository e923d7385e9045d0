"""Call phases on virtual time (real `CallBridge`, in-process fakes): phone menus and key presses, hold,
call screening, and voicemail with machine detection taken as evidence. The same situations over real sockets
with the stand-ins are in test_gateway_lines.py.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from typing import Any

import pytest
from haggle_contracts import events as ev
from haggle_gateway import dtmf
from haggle_gateway.phases import CallPhase
from haggle_gateway.settings import GatewaySettings
from haggle_sim.fakes import BridgeRig

SETTINGS = GatewaySettings(public_base_url="http://127.0.0.1:9", twilio_account_sid="AC" + "0" * 32,
                           twilio_auth_token="token", greeting_wait_s=1.5, silence_timeout_s=20.0,
                           transcript_settle_s=1.0, callback_number="+14155550100")
MENU = "Thanks for calling Summit Plumbing. For service, press 1. For billing, press 2."


def settings(**changes: Any) -> GatewaySettings:
    return dataclasses.replace(SETTINGS, **changes)


def line_audio(rig: BridgeRig) -> bytes:
    return b"".join(base64.b64decode(m["media"]["payload"]) for m in rig.link.of_kind("media"))


def heard(rig: BridgeRig, item_id: str, text: str) -> None:
    rig.realtime.speech(item_id)
    rig.realtime.speech(item_id, started=False)
    rig.realtime.user_transcript(item_id, text)


def outputs(rig: BridgeRig, call_id: str) -> list[str]:
    return [e["item"]["output"] for e in rig.realtime.of_type("conversation.item.create")
            if e["item"].get("call_id") == call_id]


# ------------------------------------------------------------------------------------------------ menus


async def test_send_dtmf_plays_the_keys_and_answers_once_they_have_played() -> None:
    async with BridgeRig(SETTINGS) as rig:
        heard(rig, "u1", MENU)
        await rig.advance(0.1)
        assert rig.bridge.phases.phase is CallPhase.MENU
        rig.realtime.emit({"type": "response.created", "response": {"id": "r1"}})
        rig.realtime.tool_call("send_dtmf", {"digits": "1#"}, call_id="k1", response_id="r1")
        rig.realtime.emit({"type": "response.done", "response": {"id": "r1", "status": "completed", "output": []}})
        await rig.advance(0.05)
        assert outputs(rig, "k1") == []  # not yet: the tones are still playing
        await rig.advance(0.5)
        (output,) = outputs(rig, "k1")
        assert '"played":"1#"' in output.replace(" ", "")
        assert dtmf.decode(line_audio(rig)) == "1#"
        assert 340 <= rig.link.media_ms <= 380  # two keys of 100 ms tone + 80 ms gap
        assert not rig.realtime.of_type("response.create")  # the model listens after pressing keys


async def test_send_dtmf_refuses_what_is_not_a_key() -> None:
    async with BridgeRig(SETTINGS) as rig:
        rig.realtime.tool_call("send_dtmf", {"digits": "1; say hello"}, call_id="k1")
        rig.realtime.tool_call("send_dtmf", {"digits": "1" * 21}, call_id="k2")
        await rig.advance(0.1)
        assert all('"ok":false' in o.replace(" ", "") for o in outputs(rig, "k1") + outputs(rig, "k2"))
        assert rig.link.media_ms == 0


async def test_a_menu_heard_three_times_gets_zero_then_the_call_is_stuck() -> None:
    async with BridgeRig(SETTINGS) as rig:
        for n in range(3):
            heard(rig, f"u{n}", MENU if n != 1 else MENU.replace("Thanks", "Thank you"))
            await rig.advance(2.0)
        assert dtmf.decode(line_audio(rig)) == "0"
        assert not rig.ended
        heard(rig, "u9", MENU)
        ended = await rig.ended_with(limit_s=5)
        assert ended.reason == "ivr_stuck"
        assert dtmf.decode(line_audio(rig)) == "0"  # pressed once


async def test_a_menu_that_moves_on_is_progress() -> None:
    async with BridgeRig(SETTINGS) as rig:
        for n, text in enumerate([MENU, MENU, "For a new appointment press 1, for an existing one press 2.",
                                  MENU, MENU]):
            heard(rig, f"u{n}", text)
            await rig.advance(2.0)
        assert rig.link.media_ms == 0 and not rig.ended


async def test_inbound_dtmf_is_parsed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="haggle_gateway")
    async with BridgeRig(SETTINGS) as rig:
        rig.link.dtmf("5")
        await rig.advance(0.05)
        assert any("DTMF '5'" in r.getMessage() for r in caplog.records)
        assert rig.twilio_malformed == 0


# ------------------------------------------------------------------------------------------------ hold


async def test_on_hold_the_agent_is_silent_and_waits_past_the_silence_timeout() -> None:
    async with BridgeRig(settings(silence_timeout_s=5.0, hold_timeout_s=300.0)) as rig:
        await rig.advance(1.6)
        rig.realtime.response("r1", "a1", "Hi, is this Summit Plumbing?", audio_ms=600)
        heard(rig, "u1", "Yes. Please hold while I get the schedule.")
        await rig.advance(2.0)
        assert rig.bridge.phases.phase is CallPhase.HOLD
        sent = rig.link.media_ms
        rig.realtime.response("r2", "a2", "Sure, I'll wait.", audio_ms=800)  # the model talks anyway
        await rig.advance(60.0)  # hold music for a minute: far past the 5 s silence timeout
        assert rig.link.media_ms == sent and not rig.ended
        heard(rig, "u2", "Thanks for holding, this is Mike. What can I do for you?")
        await rig.advance(1.5)
        assert rig.bridge.phases.phase is CallPhase.CONVERSATION
        rig.realtime.response("r3", "a3", "I have a leaking faucet.", audio_ms=800)
        await rig.advance(1.0)
        assert rig.link.media_ms > sent
        assert len(rig.realtime.of_type("conversation.item.create")) == 1  # the greeting, never again


async def test_the_model_can_put_the_call_on_hold_and_take_it_off() -> None:
    async with BridgeRig(settings(silence_timeout_s=5.0)) as rig:
        rig.realtime.tool_call("hold", {"state": "on_hold"}, call_id="h1")
        await rig.advance(30.0)
        assert rig.bridge.phases.phase is CallPhase.HOLD and not rig.ended
        rig.realtime.tool_call("hold", {"state": "resumed"}, call_id="h2")
        await rig.advance(0.1)
        assert rig.bridge.phases.phase is CallPhase.CONVERSATION


async def test_hold_timeout_caps_the_wait() -> None:
    async with BridgeRig(settings(hold_timeout_s=120.0)) as rig:
        heard(rig, "u1", "Please hold.")
        ended = await rig.ended_with(limit_s=200)
        assert ended.reason == "hold_timeout"
        assert 120 <= ended.duration_s <= 125


# ------------------------------------------------------------------------------------------------ screening


async def test_a_screening_prompt_is_a_phase_and_the_person_ends_it() -> None:
    async with BridgeRig(SETTINGS) as rig:
        heard(rig, "u1", "Hi, if you record your name and reason for calling, I'll see if this person is available.")
        await rig.advance(1.5)
        assert rig.bridge.phases.phase is CallPhase.SCREENING
        heard(rig, "u2", "Hello? This is Joe.")
        await rig.advance(1.5)
        assert rig.bridge.phases.phase is CallPhase.CONVERSATION


# ------------------------------------------------------------------------------------------------ voicemail


async def test_a_person_with_a_long_greeting_is_talked_to_despite_a_machine_verdict() -> None:
    async with BridgeRig(SETTINGS) as rig:
        rig.realtime.speech("u1")
        await rig.advance(3.0)
        rig.bridge.machine_verdict("machine_start")  # Twilio: greeting speech over 2.4 s
        await rig.advance(4.0)
        rig.realtime.speech("u1", started=False)
        rig.realtime.user_transcript("u1", "Thanks for calling Summit Plumbing and Drain, this is Mike, how can "
                                           "I help you?")
        rig.realtime.response("r1", "a1", "Hi, is this Summit Plumbing?", audio_ms=1000)
        await rig.advance(2.0)
        heard(rig, "u2", "Yes it is.")  # an interactive reply to our opening line
        await rig.advance(10.0)
        rig.bridge.machine_verdict("machine_end_other")
        await rig.advance(1.0)
        assert not rig.ended and rig.bridge.phases.phase is CallPhase.CONVERSATION


async def test_a_beep_verdict_is_a_voicemail_and_hangs_up_by_default() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await rig.advance(0.5)
        rig.bridge.machine_verdict("machine_end_beep")
        ended = await rig.ended_with(limit_s=2)
        assert (ended.reason, ended.voicemail_left) == ("voicemail", False)
        assert rig.link.media_ms == 0


async def test_voicemail_message_is_left_after_the_beep_then_the_call_ends() -> None:
    async with BridgeRig(settings(voicemail_action="message")) as rig:
        await rig.advance(0.5)
        rig.bridge.machine_verdict("machine_end_beep")
        await rig.advance(0.1)
        forced = [e for e in rig.realtime.of_type("conversation.item.create") if e["item"]["type"] == "force_message"]
        (message,) = forced
        text = message["item"]["content"][0]["text"]
        assert "AI assistant" in text and "homeowner" in text and "leak" in text and "4 1 5 5 5 5 0 1 0 0" in text
        assert message["item"]["interruptible"] is False
        rig.realtime.response("r1", "a1", text, audio_ms=5000)
        await rig.advance(2.0)
        assert not rig.ended  # the message is still playing
        ended = await rig.ended_with(limit_s=10)
        assert (ended.reason, ended.voicemail_left) == ("voicemail", True)
        assert rig.link.media_ms >= 5000 and rig.link.queued_ms == 0


async def test_a_suspected_machine_that_does_not_answer_the_opening_line_is_a_voicemail() -> None:
    async with BridgeRig(settings(voicemail_reply_wait_s=6.0)) as rig:
        rig.bridge.machine_verdict("machine_start")
        await rig.advance(1.6)
        rig.realtime.response("r1", "a1", "Hi, is this Summit Plumbing?", audio_ms=1000)
        await rig.advance(6.0)
        assert not rig.ended
        ended = await rig.ended_with(limit_s=3)
        assert ended.reason == "voicemail"


async def test_the_model_can_judge_it_a_voicemail() -> None:
    async with BridgeRig(SETTINGS) as rig:
        rig.realtime.tool_call("voicemail", {}, call_id="v1")
        assert (await rig.ended_with(limit_s=2)).reason == "voicemail"


async def test_both_handshake_events_mid_stream_are_harmless() -> None:
    async with BridgeRig(SETTINGS) as rig:
        rig.realtime.emit({"type": "conversation.created", "conversation": {"id": "c1"}})
        rig.realtime.emit({"type": "session.created", "session": {}})
        await rig.advance(1.6)
        assert len(rig.realtime.of_type("conversation.item.create")) == 1 and not rig.ended
        assert not rig.publisher.of_type(ev.CallEnded)


async def test_a_beep_on_the_line_is_a_voicemail_and_the_message_follows_it() -> None:
    from haggle_sim import audio

    async with BridgeRig(settings(voicemail_action="message")) as rig:
        rig.bridge.machine_verdict("machine_start")
        await rig.advance(0.1)
        beep = audio.beep(500)
        for start in range(0, len(beep), 160):
            rig.link.caller_audio(beep[start:start + 160])
            await rig.advance(0.02)
        await rig.advance(0.1)
        forced = [e for e in rig.realtime.of_type("conversation.item.create") if e["item"]["type"] == "force_message"]
        assert len(forced) == 1 and "AI assistant" in forced[0]["item"]["content"][0]["text"]
        assert rig.bridge.phases.phase is CallPhase.VOICEMAIL


async def test_no_opening_line_is_sent_to_a_menu() -> None:
    async with BridgeRig(SETTINGS) as rig:
        heard(rig, "u1", MENU)
        await rig.advance(5.0)  # silence after the menu: no "Hi, is this ...?" to a machine
        assert not rig.realtime.of_type("conversation.item.create")
        heard(rig, "u2", "Service desk, this is Sam. Hello?")
        await rig.advance(2.5)
        assert len(rig.realtime.of_type("conversation.item.create")) == 1  # now the person gets it


async def test_off_hold_the_model_is_asked_to_go_on() -> None:
    async with BridgeRig(SETTINGS) as rig:
        rig.realtime.emit({"type": "response.created", "response": {"id": "r1"}})
        rig.realtime.tool_call("hold", {"state": "on_hold"}, call_id="h1", response_id="r1")
        rig.realtime.emit({"type": "response.done", "response": {"id": "r1", "status": "completed", "output": []}})
        await rig.advance(1.0)
        assert not rig.realtime.of_type("response.create")
        rig.realtime.emit({"type": "response.created", "response": {"id": "r2"}})
        rig.realtime.tool_call("hold", {"state": "resumed"}, call_id="h2", response_id="r2")
        rig.realtime.emit({"type": "response.done", "response": {"id": "r2", "status": "completed", "output": []}})
        await rig.advance(0.1)
        assert len(rig.realtime.of_type("response.create")) == 1


async def test_a_voicemail_message_that_never_comes_still_ends_the_call() -> None:
    async with BridgeRig(settings(voicemail_action="message", hangup_fallback_s=5.0)) as rig:
        rig.bridge.machine_verdict("machine_end_beep")
        ended = await rig.ended_with(limit_s=40)
        assert (ended.reason, ended.voicemail_left) == ("voicemail", False)
