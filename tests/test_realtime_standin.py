"""The xAI realtime stand-in speaks the protocol the way xai-realtime.md describes Grok, over a real socket.

A raw `websockets` client drives it, so these tests pin the stand-in's behaviour independently of the gateway.
Its VAD runs in audio time, so audio can be appended faster than real time.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import websockets
from haggle_sim.audio import frames, silence, speech_like
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
