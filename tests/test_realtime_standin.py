"""The xAI realtime stand-in speaks the protocol the way docs/xai-realtime.md describes Grok, over a real socket.

A raw `websockets` client drives it, so these tests pin the stand-in's behaviour independently of the gateway.
Its VAD runs in audio time, so audio can be appended faster than real time.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from typing import Any

import pytest
import websockets
from haggle_sim.audio import beep, frames, music, silence, speech_like
from haggle_sim.personas import Persona, PersonaBook, ToolCall, Turn
from haggle_sim.realtime_standin import GENERIC_PERSONA, RealtimeStandin
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

KEY = "standin-key"
PERSONA = Persona(
    business="Joe's Plumbing",
    phone="+14155550101",
    ms_per_char=5,
    turns=(
        Turn("provider", "Hello, this is Joe's Plumbing speaking."),
        Turn("agent", "Hi, is this {business}?", tools=(ToolCall("record_quote", {"price": 200}),)),
        Turn("provider", "Yes."),
        Turn("agent", "I have a leaking kitchen faucet and I would like an estimate to fix it, please. " * 3),
        Turn("provider", "Sure."),
        Turn("agent", "Thanks, goodbye!", tools=(ToolCall("end_call", {"reason": "done"}),)),
    ),
)
INSTRUCTIONS = 'Your first words are exactly the opening_line.\nopening_line: "Hi, is this Joe\'s Plumbing?"'


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def next(self, timeout_s: float = 5.0) -> dict[str, Any]:
        while True:
            event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s))
            self.seen.append(event)
            if event["type"] != "ping":
                return event

    async def until(self, kind: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Events up to and including the first of `kind` (pings skipped)."""
        got = []
        while True:
            event = await self.next(timeout_s)
            got.append(event)
            if event["type"] == kind:
                return got

    async def append(self, ulaw: bytes) -> None:
        for frame in frames(ulaw):
            await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()})


async def open_client(standin: RealtimeStandin, *, silence_ms: int = 300, fmt: dict[str, Any] | None = None,
                      instructions: str = INSTRUCTIONS) -> Client:
    ws = await websockets.connect(standin.url + "?model=grok-test", proxy=None,
                                  additional_headers={"Authorization": f"Bearer {KEY}"})
    client = Client(ws)
    first = await client.next()
    assert first["type"] in ("session.created", "conversation.created")
    fmt = fmt or {"type": "audio/pcmu"}
    await client.send({"type": "session.update", "session": {
        "instructions": instructions, "voice": "Rex",
        "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms},
        "audio": {"input": {"format": fmt}, "output": {"format": fmt}}}})
    updated = await client.until("session.updated")
    assert updated[-1]["session"]["audio"]["output"]["format"] == fmt
    return client


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def test_auth_and_path_are_checked_and_counted() -> None:
    async with RealtimeStandin(PersonaBook([PERSONA]), api_key=KEY) as standin:
        for url, headers, status in ((standin.url, {"Authorization": "Bearer wrong"}, 401),
                                     (standin.url, {}, 401),
                                     (standin.url.replace("/v1/realtime", "/other"),
                                      {"Authorization": f"Bearer {KEY}"}, 404)):
            with pytest.raises(InvalidStatus) as info:
                await websockets.connect(url, proxy=None, additional_headers=headers)
            assert info.value.response.status_code == status
        assert (standin.connections, standin.refused, standin.sessions) == (3, 3, [])
    async with RealtimeStandin(PersonaBook(), api_key=KEY, reject_auth=True) as standin:
        with pytest.raises(InvalidStatus):
            await websockets.connect(standin.url, proxy=None, additional_headers={"Authorization": f"Bearer {KEY}"})


@pytest.mark.parametrize("handshake", ["session.created", "conversation.created"])
async def test_handshake_and_session_echo(handshake: str) -> None:
    async with RealtimeStandin(PersonaBook([PERSONA]), api_key=KEY, handshake=handshake) as standin:
        client = await open_client(standin)
        session = standin.sessions[0]
        assert session.events_sent[0][1]["type"] == handshake
        assert session.query == {"model": "grok-test"}
        assert session.persona is PERSONA and session.business == "Joe's Plumbing"
        assert session.session["voice"] == "Rex" and session.session["turn_detection"]["silence_duration_ms"] == 300
        await client.ws.close()


async def test_a_provider_turn_end_to_end() -> None:
    """Speech -> VAD events -> two cumulative transcript snapshots -> an auto response with tools."""
    async with RealtimeStandin(PersonaBook([PERSONA]), api_key=KEY, pace=50.0) as standin:
        client = await open_client(standin, silence_ms=300)
        await client.append(speech_like(400) + silence(250))
        await client.send({"type": "input_audio_buffer.commit_nothing"})  # a marker: unknown -> error
        events = await client.until("error")
        assert types(events) == ["input_audio_buffer.speech_started", "error"]  # 250 ms < 300 ms: not stopped
        assert 0 <= events[0]["audio_start_ms"] <= 20
        await client.append(silence(100))
        events = await client.until("response.done")
        kinds = types(events)
        assert kinds[:3] == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                             "conversation.item.added"]
        assert 390 <= events[0]["audio_end_ms"] <= 410
        user_item = events[1]["item_id"]
        if sum(e["type"] == "conversation.item.input_audio_transcription.completed" for e in events) < 2:
            events += await client.until("conversation.item.input_audio_transcription.completed")  # it lags
        snapshots = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
        assert [(s["item_id"], s["transcript"], s["status"]) for s in snapshots] == [
            (user_item, "Hello, this is", "in_progress"),
            (user_item, "Hello, this is Joe's Plumbing speaking.", "completed")]
        audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
        text = "Hi, is this Joe's Plumbing?"
        assert len(audio) == 8 * PERSONA.speech_ms(text)  # pcmu: 8 bytes per ms
        words = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
        assert words == text
        done = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
        assert "transcript" not in done  # the real quirk
        call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert call["name"] == "record_quote" and json.loads(call["arguments"]) == {"price": 200}
        assert next(e for e in events if e["type"] == "response.done")["response"]["status"] == "completed"
        await client.ws.close()


async def test_speech_cancels_the_response_after_a_few_late_deltas() -> None:
    async with RealtimeStandin(PersonaBook([PERSONA]), api_key=KEY, pace=1.0, chunk_ms=50,
                               late_deltas_after_cancel=2) as standin:
        client = await open_client(standin)
        await client.send({"type": "response.create"})  # the opener
        await client.until("response.done")
        await client.send({"type": "response.create"})  # the long line
        await client.until("response.output_audio.delta")
        await client.send({"type": "response.create"})
        error = await client.until("error")
        assert error[-1]["error"]["message"].startswith("Conversation already has an active response in progress:")
        await client.append(speech_like(100))
        events = await client.until("response.done")
        started = types(events).index("input_audio_buffer.speech_started")
        late = [e for e in events[started:] if e["type"] == "response.output_audio.delta"]
        assert len(late) <= 2
        assert events[-1]["response"]["status"] == "cancelled"
        assert standin.sessions[0].responses[1]["status"] == "cancelled"
        await client.send({"type": "response.cancel"})
        error = await client.until("error")
        assert error[-1]["error"]["message"] == "Cancellation failed: no active response found"
        await client.ws.close()


async def test_force_message_speaks_verbatim_and_consumes_the_opener() -> None:
    async with RealtimeStandin(PersonaBook([PERSONA]), api_key=KEY, pace=50.0) as standin:
        client = await open_client(standin)
        text = "Hi, is this Joe's Plumbing? I'm an AI assistant calling on behalf of a homeowner."
        await client.send({"type": "conversation.item.create", "item": {
            "type": "force_message", "role": "assistant", "interruptible": False,
            "content": [{"type": "output_text", "text": text}]}})
        events = await client.until("response.done")
        assert "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta") == text
        assert not [e for e in events if e["type"] == "response.function_call_arguments.done"]
        await client.send({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0,
                           "audio_end_ms": 10})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert types(events)[0] == "response.created"  # the truncate was accepted silently
        spoken = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
        assert spoken.startswith("I have a leaking kitchen faucet")
        await client.ws.close()


async def test_pcm24k_output_and_garbage_input() -> None:
    async with RealtimeStandin(PersonaBook([PERSONA]), api_key=KEY, pace=50.0) as standin:
        client = await open_client(standin, fmt={"type": "audio/pcm", "rate": 24000})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
        assert len(audio) == 48 * PERSONA.speech_ms("Hi, is this Joe's Plumbing?")  # PCM16 at 24 kHz
        await client.ws.send("{not json")
        assert (await client.until("error"))[-1]["error"]["code"] == "invalid_json"
        await client.send({"type": "input_audio_buffer.append", "audio": "***"})
        assert (await client.until("error"))[-1]["error"]["code"] == "invalid_audio"
        received = [e["type"] for _, e in standin.sessions[0].events_received]
        assert received.count("input_audio_buffer.append") == 1 and "session.update" in received
        await client.ws.close()


async def test_pings_generic_persona_and_drop() -> None:
    async with RealtimeStandin(PersonaBook([PERSONA]), api_key=KEY, ping_interval_s=0.05, drop_after_s=0.4,
                               pace=50.0) as standin:
        client = await open_client(standin, instructions='opening_line: "Hi, is this Nobody Known?"')
        session = standin.sessions[0]
        assert session.persona is GENERIC_PERSONA and session.business == "Nobody Known"
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        spoken = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
        assert spoken == "Hi, is this Nobody Known?"
        with pytest.raises(ConnectionClosed):
            while True:
                await client.next(timeout_s=5)
        assert any(e["type"] == "ping" for e in client.seen)
        assert client.ws.close_code == 1011


# --- the real world's habits, each behind an option or a persona ----------------------------------------------

async def test_both_handshake_events_in_order() -> None:
    async with RealtimeStandin(PersonaBook([PERSONA]), api_key=KEY, handshake="both") as standin:
        async with await websockets.connect(standin.url, proxy=None,
                                            additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            client = Client(ws)
            assert [(await client.next())["type"] for _ in range(2)] == ["session.created", "conversation.created"]


async def _respond_once(client: Client) -> list[dict[str, Any]]:
    await client.append(speech_like(300) + silence(400))
    return await client.until("response.done")


async def test_tool_calls_without_response_id_before_the_last_audio() -> None:
    persona = Persona(business="Joe's Plumbing", phone="+1", ms_per_char=20, turns=(
        Turn("provider", "Hello?"),
        Turn("agent", "Great, that works for us. Thank you, goodbye!", tools=(
            ToolCall("record_quote", {"price": 175, "agreed": True}), ToolCall("end_call", {"reason": "agreed"}))),
    ))
    async with RealtimeStandin(PersonaBook([persona]), api_key=KEY, chunk_ms=100, pace=20.0,
                               tool_response_id=False, tools_before_last_audio=True) as standin:
        client = await open_client(standin)
        events = await _respond_once(client)
        calls = [e for e in events if e["type"] == "response.function_call_arguments.done"]
        assert [c["name"] for c in calls] == ["record_quote", "end_call"]
        assert all("response_id" not in e for e in events if "function_call" in e["type"]
                   or e.get("item", {}).get("type") == "function_call")
        last_audio = max(i for i, e in enumerate(events) if e["type"] == "response.output_audio.delta")
        assert events.index(calls[-1]) < last_audio  # the hang-up request arrives while audio still streams
        done = events[-1]["response"]
        assert [o["type"] for o in done["output"]] == ["message", "function_call", "function_call"]
        assert done["output"][0]["status"] == "completed"


async def test_audio_five_times_faster_than_real_time() -> None:
    persona = Persona(business="Joe's Plumbing", phone="+1", ms_per_char=25, turns=(
        Turn("provider", "Hello?"), Turn("agent", "x" * 80)))  # 2 s of audio
    async with RealtimeStandin(PersonaBook([persona]), api_key=KEY, chunk_ms=20, pace=5.0) as standin:
        client = await open_client(standin)
        events = await _respond_once(client)
        audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
        assert len(audio) == 2000 * 8
        session = standin.sessions[0]
        times = session.sent_times("response.output_audio.delta")
        assert len(times) == 100
        # Paced at 5x: 4 ms between 20 ms chunks. The median gap is immune to a few scheduler stalls and stays
        # under the chunk's own 20 ms (faster than real time) with a five-fold margin.
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        assert gaps[len(gaps) // 2] < 0.020


async def test_input_transcript_is_revised_for_the_same_item() -> None:
    persona = Persona(business="Joe's Plumbing", phone="+1", ms_per_char=5, turns=(
        Turn("provider", "That would be one seventy five.", heard_as="That would be one seventy"),
        Turn("agent", "Okay.")))
    async with RealtimeStandin(PersonaBook([persona]), api_key=KEY, transcript_revisions=True,
                               transcript_delay_s=0.01, revision_delay_s=0.05) as standin:
        client = await open_client(standin)
        await client.append(speech_like(300) + silence(400))
        finals: list[dict[str, Any]] = []
        while len(finals) < 2:
            event = await client.next()
            if (event["type"] == "conversation.item.input_audio_transcription.completed"
                    and event.get("status") == "completed"):
                finals.append(event)
        assert finals[0]["item_id"] == finals[1]["item_id"]
        assert [f["transcript"] for f in finals] == ["That would be one seventy", "That would be one seventy five."]
        assert standin.sessions[0].revisions == [(finals[0]["item_id"], finals[0]["transcript"],
                                                  finals[1]["transcript"])]


MENU = Persona(business="Ace Drain", phone="+2", ms_per_char=5, turns=(
    Turn("provider", "For service press 1. For billing press 2.", menu="1"),
    Turn("agent", "", tools=(ToolCall("send_dtmf", {"digits": "1"}),)),
    Turn("provider", "Service desk, this is Sam. How can I help?"),
    Turn("agent", "Hi, is this {business}?"),
))
DTMF_TOOL = {"type": "function", "name": "send_dtmf", "parameters": {"type": "object", "properties": {}}}


async def test_menu_gets_a_silent_send_dtmf_call_and_then_waits_for_the_line() -> None:
    async with RealtimeStandin(PersonaBook([MENU]), api_key=KEY) as standin:
        client = await open_client(standin, instructions="You call Ace Drain.")
        await client.send({"type": "session.update", "session": {"tools": [DTMF_TOOL]}})
        await client.until("session.updated")
        events = await _respond_once(client)
        assert "response.output_audio.delta" not in types(events)
        call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert (call["name"], json.loads(call["arguments"])) == ("send_dtmf", {"digits": "1"})
        # The gateway reports the tones played and asks for more: the model has nothing to say yet.
        await client.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": call["call_id"], "output": '{"played": "1"}'}})
        await client.send({"type": "response.create"})
        done = (await client.until("response.done"))[-1]
        assert done["response"]["output"] == []
        assert standin.sessions[0].tool_outputs[call["call_id"]]["output"] == '{"played": "1"}'
        # The person who picks up gets the next scripted line.
        events = await _respond_once(client)
        assert standin.sessions[0].responses[-1]["text"] == "Hi, is this Ace Drain?"
        assert "response.output_audio.delta" in types(events)


async def test_without_the_tool_the_model_says_the_key_aloud() -> None:
    async with RealtimeStandin(PersonaBook([MENU]), api_key=KEY) as standin:
        client = await open_client(standin, instructions="You call Ace Drain.")
        events = await _respond_once(client)
        assert "response.function_call_arguments.done" not in types(events)
        assert standin.sessions[0].responses[-1]["text"] == "I'll press 1."
        assert standin.sessions[0].undeclared_tools == ["send_dtmf"]


async def test_hold_music_gets_no_answer_and_the_person_after_it_does() -> None:
    hold = Persona(business="Rapid Rooter", phone="+3", ms_per_char=5, turns=(
        Turn("provider", "Thanks for calling Rapid Rooter, please hold."),
        Turn("agent", ""),
        Turn("provider", "", sound="music", ms=1500),
        Turn("provider", "Thanks for holding, this is Dana. Hello?"),
        Turn("agent", "Hi, is this {business}?"),
    ))
    async with RealtimeStandin(PersonaBook([hold]), api_key=KEY) as standin:
        client = await open_client(standin, instructions="You call Rapid Rooter.")
        events = await _respond_once(client)
        assert events[-1]["response"]["output"] == []  # "please hold": nothing to say
        await client.append(music(1500) + silence(400))
        await client.until("input_audio_buffer.committed")
        session = standin.sessions[0]
        await client.append(speech_like(300) + silence(400))
        events = await client.until("response.done")
        assert session.responses[-1]["text"] == "Hi, is this Rapid Rooter?"
        assert len(session.responses) == 2  # the music got no response of its own

        def finals() -> list[str]:
            return [e["transcript"] for e in client.seen
                    if e["type"] == "conversation.item.input_audio_transcription.completed"
                    and e.get("status") == "completed"]

        while len(finals()) < 3:
            await client.next()
        assert finals() == ["Thanks for calling Rapid Rooter, please hold.", "",
                               "Thanks for holding, this is Dana. Hello?"]


async def test_lines_closer_than_the_vad_silence_are_one_user_turn() -> None:
    voicemail = Persona(business="Joe's Plumbing", phone="+4", answer="voicemail", ms_per_char=5, turns=(
        Turn("provider", "You've reached Joe's Plumbing, leave a message."),
        Turn("provider", "", sound="beep", ms=500, pause_before_ms=200),
        Turn("agent", "Hi, this is an assistant calling about a faucet.", tools=(ToolCall("end_call", {}),)),
    ))
    async with RealtimeStandin(PersonaBook([voicemail]), api_key=KEY) as standin:
        client = await open_client(standin, instructions="Hi, is this Joe's Plumbing?", silence_ms=500)
        await client.append(speech_like(800) + silence(200) + beep(500) + silence(600))
        events = await client.until("response.done")
        assert standin.sessions[0].responses[-1]["text"].startswith("Hi, this is an assistant")
        assert "response.function_call_arguments.done" in types(events)
        assert types(client.seen).count("input_audio_buffer.committed") == 1
        assert standin.sessions[0].sent("conversation.item.input_audio_transcription.completed")[0][
            "transcript"].startswith("You've reached")


async def test_a_replayed_menu_is_heard_as_the_menu_and_answered_again() -> None:
    menu = Persona(business="Ace Drain", phone="+5", ms_per_char=5, turns=(
        Turn("provider", "For service press 1. For billing press 2.", menu="1", ms=1000),
        Turn("agent", "", tools=(ToolCall("send_dtmf", {"digits": "1"}),)),
        Turn("provider", "Service desk, this is Sam. How can I help?", ms=400),
        Turn("agent", "Hi, is this {business}?"),
    ))
    async with RealtimeStandin(PersonaBook([menu]), api_key=KEY) as standin:
        client = await open_client(standin, instructions="You call Ace Drain.")
        await client.send({"type": "session.update", "session": {"tools": [DTMF_TOOL]}})
        await client.until("session.updated")
        session = standin.sessions[0]
        for _ in range(2):  # the menu, then the same menu again (the key did not reach it)
            await client.append(speech_like(1000) + silence(400))
            events = await client.until("response.done")
            assert [e["name"] for e in events if e["type"] == "response.function_call_arguments.done"] == ["send_dtmf"]
        assert session.menu_replays == 1
        await client.append(speech_like(400) + silence(400))
        await client.until("response.done")
        assert session.responses[-1]["text"] == "Hi, is this Ace Drain?"
