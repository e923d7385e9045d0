"""The Twilio stand-in plays the real world's harder lines: a receptionist AMD takes for a machine, a
real voicemail with a beep, a phone menu that waits for DTMF keys in the agent's audio, hold music, a screening
prompt, and Twilio's refusal of ws:// stream urls.

Driven from outside, like tests/test_twilio_standin.py: the official SDK creates the calls, a signature-checking
receiver takes the AMD callbacks, and a test Media Streams server plays the agent's side over a real WebSocket.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
from haggle_gateway import dtmf
from haggle_sim import audio
from haggle_sim.personas import (
    MENU_PROMPT,
    Persona,
    PersonaBook,
    Turn,
    on_hold,
    phone_menu,
    receptionist,
    screened,
    voicemail,
)
from haggle_sim.twilio_media_client import sound_bytes
from haggle_sim.twilio_standin import TwilioStandin, amd_verdict
from test_twilio_standin import ACCOUNT_SID, AUTH_TOKEN, HUMAN, Session, StreamServer, create, receiver, sdk

DEAL = {"first_quote": 200, "counter": 150, "final": 175}


def standin(*personas: Persona, **options: object) -> TwilioStandin:
    return TwilioStandin(PersonaBook(list(personas)), ACCOUNT_SID, AUTH_TOKEN, **options)  # type: ignore[arg-type]


def inbound(session: Session) -> bytes:
    """Every inbound (provider) audio byte the media server got so far."""
    return b"".join(base64.b64decode(m["media"]["payload"]) for _, m in session.messages if m.get("event") == "media")


# --- answering-machine detection ----------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "expected"), [("Enable", ("machine_start", 2400)),
                                                ("DetectMessageEnd", ("machine_end_other", 5000 + 1200))])
def test_a_long_greeting_person_is_a_machine_to_twilio(mode: str, expected: tuple[str, int]) -> None:
    assert amd_verdict(receptionist("Summit Plumbing and Drain", HUMAN, **DEAL), mode) == expected


def test_amd_verdicts_follow_twilios_rules() -> None:
    short = Persona(business="B", phone=HUMAN, turns=(Turn("provider", "Hello?"),), ms_per_char=25)
    assert amd_verdict(short, "Enable") == ("human", 200 + 1200)
    assert amd_verdict(short, "DetectMessageEnd", speech_end_ms=500) == ("human", 700)
    box = voicemail("B", HUMAN, greeting_ms=4000, beep_ms=500)
    assert amd_verdict(box, "Enable") == ("machine_start", 2400)
    assert amd_verdict(box, "DetectMessageEnd") == ("machine_end_beep", 4000 + 300 + 500)
    assert amd_verdict(box, "DetectMessageEnd", timeout_ms=3000) == ("unknown", 3000)
    long_person = receptionist("B", HUMAN, **DEAL, greeting_ms=5000)
    assert amd_verdict(long_person, "Enable", speech_threshold_ms=6000)[0] == "human"


async def test_receptionist_gets_a_machine_verdict_in_the_async_amd_callback() -> None:
    persona = receptionist("Summit Plumbing and Drain", HUMAN, **DEAL, greeting_ms=1500, ms_per_char=10)
    persona = Persona(**{**persona.__dict__, "ring_ms": 50})
    async with standin(persona) as twilio, StreamServer() as media, receiver() as hooks:
        client = sdk(twilio.base_url)
        call = await create(client, to=HUMAN, twiml=media.twiml(), machine_detection="DetectMessageEnd",
                            async_amd="true", async_amd_status_callback=f"{hooks.base_url}/amd",
                            machine_detection_speech_threshold=1000, machine_detection_speech_end_threshold=500)
        session = await media.session()
        await session.speech_end(within=5)  # the greeting plays on the stream while AMD listens
        await hooks.wait(lambda: bool(hooks.on("/amd")), within=5)
        await asyncio.to_thread(client.calls(call.sid).update, status="completed")
        await twilio.wait_for_call_end(call.sid, timeout=5)
    amd = hooks.on("/amd")[0]
    assert amd.valid
    assert amd.params == {"AccountSid": ACCOUNT_SID, "CallSid": call.sid, "AnsweredBy": "machine_end_other",
                          "MachineDetectionDuration": "2000"}


# --- voicemail ------------------------------------------------------------------------------------------------

async def test_voicemail_greeting_beep_machine_end_beep_and_the_recorded_message() -> None:
    box = voicemail("Joe's Plumbing", HUMAN, greeting_ms=800, beep_ms=500)
    box = Persona(**{**box.__dict__, "ring_ms": 50})
    async with standin(box) as twilio, StreamServer() as media, receiver() as hooks:
        client = sdk(twilio.base_url)
        call = await create(client, to=HUMAN, twiml=media.twiml(), machine_detection="DetectMessageEnd",
                            async_amd="true", async_amd_status_callback=f"{hooks.base_url}/amd")
        session = await media.session()
        _, start = await session.next_event("start")
        await hooks.wait(lambda: bool(hooks.on("/amd")), within=5)  # the verdict comes once the beep ended
        await session.speech_end()  # (greeting + beep are already over)
        await session.play(start["streamSid"], audio.speech_like(1000, seed=9))  # the message
        await session.play(start["streamSid"], audio.silence(200))
        sim = twilio.call(call.sid)
        log = sim.streams[-1]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while log.message_ms < 1000 and loop.time() < deadline:
            await session.next_event("media")  # the line's clock: one inbound frame per 20 ms
        await asyncio.to_thread(client.calls(call.sid).update, status="completed")
        await twilio.wait_for_call_end(call.sid, timeout=5)
    assert hooks.on("/amd")[0].params["AnsweredBy"] == "machine_end_beep"
    assert hooks.on("/amd")[0].params["MachineDetectionDuration"] == str(800 + 300 + 500)
    assert audio.beep(500) in inbound(session)  # a real tone in the audio, not a flag
    assert log.beep_at is not None
    assert log.message_ms == 1000  # everything said after the beep was recorded


async def test_voicemail_hangs_up_when_its_recording_time_is_over() -> None:
    box = voicemail("Joe's Plumbing", HUMAN, greeting_ms=300, beep_ms=200, record_max_ms=400)
    box = Persona(**{**box.__dict__, "ring_ms": 50})
    async with standin(box) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        session = await media.session()
        await session.next_event("stop", within=5)
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)
    assert sim.end_reason == "provider-hangup"
    assert sim.streams[-1].message_ms == 0


# --- phone menu -----------------------------------------------------------------------------------------------

def _menu(**kwargs: object) -> Persona:
    persona = phone_menu("Ace Drain", HUMAN, **DEAL, ms_per_char=5, menu_timeout_ms=500)
    return Persona(**{**persona.__dict__, "ring_ms": 50, **kwargs})


async def test_menu_replays_on_silence_and_wrong_keys_then_hands_to_a_person() -> None:
    async with standin(_menu()) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        session = await media.session()
        _, start = await session.next_event("start")
        sid = start["streamSid"]
        await session.speech_end()  # the menu, first time: say nothing
        await session.speech_end()  # replayed after 500 ms without a key
        await session.play(sid, dtmf.tones("3"))  # a key the menu did not offer
        await session.speech_end()  # replayed again
        await session.play(sid, dtmf.tones("1"))
        await session.speech_end()  # "Service desk, this is Sam. Hello?"
        sim = twilio.call(call.sid)
        log = sim.streams[-1]
        await asyncio.to_thread(sdk(twilio.base_url).calls(call.sid).update, status="completed")
        await twilio.wait_for_call_end(call.sid, timeout=5)
    assert [ln.turn_index for ln in log.provider_lines] == [0, 0, 0, 2]
    assert (log.menu_plays, log.digits, log.wrong_digits) == (3, "31", "3")
    assert log.talked_over_bytes == 0  # tones are the answer a menu expects, not talking over it


async def test_menu_hangs_up_after_its_last_play_and_notices_speech_over_it() -> None:
    async with standin(_menu(menu_max_plays=2)) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        session = await media.session()
        _, start = await session.next_event("start")
        await session.speech_start()
        await session.play(start["streamSid"], audio.speech_like(400, seed=4))  # "I'll press one" over the menu
        await session.next_event("stop", within=10)
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)
    log = sim.streams[-1]
    assert sim.end_reason == "provider-hangup" and log.menu_plays == 2 and log.digits == ""
    assert log.talked_over_bytes == 400 * 8
    assert log.provider_lines[0].agent_audio_bytes == 400 * 8
    assert MENU_PROMPT.format(business="Ace Drain") == log.provider_lines[0].text


@pytest.mark.parametrize("offset_ms", [0, 3, 7, 13, 19])
def test_tones_are_not_talking_at_any_frame_alignment(offset_ms: int) -> None:
    assert sound_bytes(audio.silence(offset_ms) + dtmf.tones("1590#")) == 0
    assert sound_bytes(audio.silence(offset_ms) + audio.speech_like(400, seed=3)) >= 380 * 8
    assert sound_bytes(audio.music(400)) == 400 * 8


# --- hold and screening ---------------------------------------------------------------------------------------

async def test_hold_music_then_a_person_and_talking_over_the_music_is_recorded() -> None:
    persona = on_hold("Rapid Rooter", HUMAN, **DEAL, hold_ms=1200, ms_per_char=5)
    persona = Persona(**{**persona.__dict__, "ring_ms": 50, "pause_ms": 300})
    async with standin(persona) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        session = await media.session()
        _, start = await session.next_event("start")
        await session.speech_end(silent_frames=5)  # "please hold": no agent line is awaited after it
        await session.speech_start()  # the music
        await session.play(start["streamSid"], audio.speech_like(300, seed=5))  # "Hello? Are you there?"
        await session.speech_end(silent_frames=10)  # (music over)
        await session.speech_end()  # "Thanks for holding, this is Dana. Hello?"
        log = twilio.call(call.sid).streams[-1]
        await asyncio.to_thread(sdk(twilio.base_url).calls(call.sid).update, status="completed")
        await twilio.wait_for_call_end(call.sid, timeout=5)
    assert [(ln.turn_index, ln.sound) for ln in log.provider_lines] == [(0, "speech"), (2, "music"), (3, "speech")]
    assert audio.music(1200, seed=2) in inbound(session)
    assert log.talked_over_bytes == 300 * 8 and log.provider_lines[1].agent_audio_bytes == 300 * 8


async def test_hold_without_agent_audio_records_nothing_over_it() -> None:
    persona = on_hold("Rapid Rooter", HUMAN, **DEAL, hold_ms=600, ms_per_char=5)
    persona = Persona(**{**persona.__dict__, "ring_ms": 50, "pause_ms": 300})
    async with standin(persona) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        session = await media.session()
        for _ in range(3):  # please hold, music, the person
            await session.speech_end(silent_frames=5)
        log = twilio.call(call.sid).streams[-1]
        await asyncio.to_thread(sdk(twilio.base_url).calls(call.sid).update, status="completed")
        await twilio.wait_for_call_end(call.sid, timeout=5)
    assert [ln.sound for ln in log.provider_lines] == ["speech", "music", "speech"]
    assert log.talked_over_bytes == 0


async def test_screening_prompt_waits_for_the_agent_then_a_person_answers() -> None:
    persona = screened("Joe's Plumbing", HUMAN, **DEAL, ms_per_char=5)
    persona = Persona(**{**persona.__dict__, "ring_ms": 50})
    async with standin(persona) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        session = await media.session()
        _, start = await session.next_event("start")
        await session.speech_end()  # the screening prompt
        log = twilio.call(call.sid).streams[-1]
        assert len(log.provider_lines) == 1  # nobody picks up until the agent has said who it is
        await session.play(start["streamSid"], audio.speech_like(500, seed=6))
        await session.speech_end()  # the person
        await asyncio.to_thread(sdk(twilio.base_url).calls(call.sid).update, status="completed")
        await twilio.wait_for_call_end(call.sid, timeout=5)
    assert [ln.turn_index for ln in log.provider_lines] == [0, 2]
    assert "state your name and the reason for your call" in log.provider_lines[0].text


# --- ws:// stream urls ----------------------------------------------------------------------------------------

async def test_ws_stream_url_is_refused_unless_told_the_setup_is_local() -> None:
    persona = Persona(business="Joe's Plumbing", phone=HUMAN, ring_ms=50, turns=(Turn("provider", "Hello?"),))
    async with standin(persona, allow_insecure_streams=False) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)
        assert media.sessions.empty()  # no WebSocket was opened
    assert sim.status == "completed" and sim.end_reason == "stream-connect-failed"
    assert "wss://" in (sim.streams[-1].connect_error or "")
    async with standin(persona, allow_insecure_streams=True) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        await media.session()
        await asyncio.to_thread(sdk(twilio.base_url).calls(call.sid).update, status="completed")
        await twilio.wait_for_call_end(call.sid, timeout=5)


def test_insecure_streams_default_comes_from_allow_insecure_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOW_INSECURE_PUBLIC_URL", "1")
    assert standin().options.allow_insecure_streams is True
    monkeypatch.delenv("ALLOW_INSECURE_PUBLIC_URL")
    assert standin().options.allow_insecure_streams is False
