"""Real phone lines end to end: receptionists with long greetings, voicemail, phone menus, hold,
call screening, and the realtime service's own habits. Twilio stand-in <-> gateway <-> realtime stand-in over
real sockets; the personas play each situation (haggle_sim.personas). Each test asserts how the call ended,
the agreed price where there is one, and that the agent said nothing over a menu or hold music.

The same situations on virtual time, without sockets, are in test_bridge_phases.py.
"""

from __future__ import annotations

import pytest
from haggle_contracts import events as ev
from haggle_sim.personas import (
    MENU_PROMPT,
    Persona,
    PersonaBook,
    ToolCall,
    Turn,
    negotiation,
    on_hold,
    phone_menu,
    receptionist,
    screened,
    voicemail,
)
from test_gateway_harness import GatewayHarness


def agreed_price(h: GatewayHarness, call_sid: str) -> float | None:
    agreed = [q.price for q in h.of(ev.QuoteRecorded, call_sid) if q.agreed]
    return agreed[-1] if agreed else None


@pytest.mark.parametrize(("amd", "verdict"), [("Enable", "machine_start"), ("DetectMessageEnd", "machine_end_other")])
@pytest.mark.slow
async def test_receptionist_with_a_long_greeting_is_talked_to(nc, amd: str, verdict: str) -> None:  # type: ignore[no-untyped-def]
    persona = receptionist("Summit Plumbing", "+14155550111", first_quote=200, counter=150, final=175,
                           greeting_ms=5000, ms_per_char=12)
    async with GatewayHarness(nc, PersonaBook([persona])) as h:
        ctx = await h.dial(persona, amd=amd)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid, timeout_s=60)
        assert [m.answered_by for m in h.of(ev.MachineDetected, ctx.call_sid)] == [verdict]
        assert ended.reason == "end_call"
        assert agreed_price(h, ctx.call_sid) == 175


async def test_voicemail_after_the_beep_hangs_up_by_default(nc) -> None:  # type: ignore[no-untyped-def]
    persona = voicemail("Drain Kings", "+14155550112", greeting_ms=3000)
    async with GatewayHarness(nc, PersonaBook([persona])) as h:
        ctx = await h.dial(persona, amd="DetectMessageEnd")
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid, timeout_s=30)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        assert (ended.reason, ended.voicemail_left) == ("voicemail", False)
        # AMD's verdict (at the beep's end) and the gateway's own beep detector race to end the call; when the
        # detector wins, the call is over before the verdict and the stand-in sends none (as for any ended call).
        assert [m.answered_by for m in h.of(ev.MachineDetected, ctx.call_sid)] in ([], ["machine_end_beep"])
        assert call.updates == [{"Status": "completed"}]


@pytest.mark.parametrize("amd", ["DetectMessageEnd", "Enable"])
@pytest.mark.slow
async def test_voicemail_message_is_left_after_the_beep(nc, amd: str) -> None:  # type: ignore[no-untyped-def]
    """DetectMessageEnd says `machine_end_beep`; Enable only `machine_start`, and the gateway hears the beep."""
    persona = voicemail("Drain Kings", "+14155550113", greeting_ms=3000)
    async with GatewayHarness(nc, PersonaBook([persona]), voicemail_action="message",
                              callback_number="+14155550000") as h:
        ctx = await h.dial(persona, amd=amd)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid, timeout_s=40)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        assert (ended.reason, ended.voicemail_left) == ("voicemail", True)
        stream = call.stream
        assert stream is not None and stream.beep_at is not None
        assert len(stream.recording) >= 8 * 2000  # seconds of message recorded after the beep
        # Hung up only once the mark sent after the message came back, i.e. once Twilio had played all of it.
        # (Not compared with the stand-in's played-bytes counter: at a hang-up it trails its own mark echoes by
        # up to a chunk.)
        assert stream.marks_echoed[-1][1].endswith("-bye")


@pytest.mark.slow
async def test_phone_menu_is_answered_with_keys_and_reaches_a_price(nc) -> None:  # type: ignore[no-untyped-def]
    persona = phone_menu("Summit Plumbing", "+14155550114", first_quote=200, counter=150, final=175, key="1",
                         ms_per_char=12)
    async with GatewayHarness(nc, PersonaBook([persona])) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid, timeout_s=60)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        stream = call.stream
        assert stream is not None
        assert ended.reason == "end_call" and agreed_price(h, ctx.call_sid) == 175
        assert stream.digits == "1" and stream.menu_plays == 1
        assert stream.talked_over_bytes == 0  # nothing said over the menu


@pytest.mark.slow
async def test_a_menu_that_never_lets_us_through_ends_as_ivr_stuck(nc) -> None:  # type: ignore[no-untyped-def]
    # Only 9 leads on, and nobody presses 9: the menu replays after every other key.
    persona = Persona(business="Loop Plumbing", phone="+14155550115", ms_per_char=12, menu_timeout_ms=4000,
                      menu_max_plays=8, turns=(
                          Turn("provider", MENU_PROMPT.format(business="Loop Plumbing"), menu="9"),
                          Turn("agent", "", tools=(ToolCall("send_dtmf", {"digits": "1"}),)),
                          Turn("provider", "Service desk, hello?"),
                      ))
    async with GatewayHarness(nc, PersonaBook([persona]), silence_timeout_s=30.0) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid, timeout_s=60)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        assert ended.reason == "ivr_stuck"
        stream = call.stream
        assert stream is not None and stream.digits.count("0") == 1  # our 0, once, among the model's keys
        assert stream.menu_plays >= 4
        assert stream.talked_over_bytes == 0


@pytest.mark.slow
async def test_hold_music_then_a_person_and_a_price(nc) -> None:  # type: ignore[no-untyped-def]
    persona = on_hold("Bay Pipe Pros", "+14155550116", first_quote=250, counter=150, final=180, hold_ms=10000,
                      ms_per_char=12)
    async with GatewayHarness(nc, PersonaBook([persona]), silence_timeout_s=8.0) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid, timeout_s=60)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        assert ended.reason == "end_call" and agreed_price(h, ctx.call_sid) == 180
        stream = call.stream
        assert stream is not None and stream.talked_over_bytes == 0  # silent over ten seconds of hold music
        greetings = [u for u in h.of(ev.UtteranceTranscribed, ctx.call_sid)
                     if u.role == ev.Role.ASSISTANT and u.text.startswith("Hi, is this")]
        assert len(greetings) <= 1


@pytest.mark.slow
async def test_call_screening_gets_one_line_then_the_person(nc) -> None:  # type: ignore[no-untyped-def]
    persona = screened("Joe's Plumbing", "+14155550117", first_quote=200, counter=150, final=175, ms_per_char=12)
    async with GatewayHarness(nc, PersonaBook([persona])) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid, timeout_s=60)
        assert ended.reason == "end_call" and agreed_price(h, ctx.call_sid) == 175
        lines = [u.text for u in sorted(h.of(ev.UtteranceTranscribed, ctx.call_sid), key=lambda u: u.seq)]
        assert lines[1].startswith("Hi, I'm an AI assistant calling for a homeowner")


async def test_xai_as_it_is_handshakes_late_tool_calls_fast_audio_revisions(nc) -> None:  # type: ignore[no-untyped-def]
    """Both handshake events, tool calls without response_id before the goodbye's last audio, audio at 5x real
    time, and revised input transcripts: the call still ends after the whole goodbye played, with the price."""
    persona = negotiation("Joe's Plumbing", "+14155550118", first_quote=200, counter=150, final=175, ms_per_char=12)
    realtime = {"handshake": "both", "tool_response_id": False, "tools_before_last_audio": True, "pace": 5.0,
                "transcript_revisions": True}
    async with GatewayHarness(nc, PersonaBook([persona]), realtime=realtime, max_messages_per_s=50.0) as h:
        ctx = await h.dial(persona)
        assert ctx.call_sid is not None
        ended = await h.wait_ended(ctx.call_sid, timeout_s=60)
        call = await h.twilio.wait_for_call_end(ctx.call_sid, timeout=10)
        assert ended.reason == "end_call" and agreed_price(h, ctx.call_sid) == 175
        stream = call.stream
        assert stream is not None and not stream.violations
        assert stream.played_bytes == stream.agent_bytes_received  # the goodbye played to the end
        lines = h.of(ev.UtteranceTranscribed, ctx.call_sid)
        latest: dict[str, ev.UtteranceTranscribed] = {}
        for u in lines:
            if u.utterance_id not in latest or u.revision >= latest[u.utterance_id].revision:
                latest[u.utterance_id] = u
        assert any(u.revision for u in lines)  # revisions were published as such
        texts = [u.text for u in sorted(latest.values(), key=lambda u: u.seq)]
        assert "Yes, this is Joe's Plumbing. How can I help you?" in texts
        assert len(texts) == len(set(texts))  # a revision never duplicates a line
