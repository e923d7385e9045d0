"""Both stand-ins play one persona and stay in step, joined by a minimal relay on real sockets.

Why: the Twilio stand-in plays the provider and the realtime stand-in plays the model, and they never talk to
each other; they only stay aligned if the persona's script reads the same to both (personas.py). These tests
join them with the least a gateway must do (audio both ways in pcmu, `send_dtmf` as in-band tones, `end_call`
as a REST hang-up once the goodbye has played) and check that each situation of a real line runs to its end:
a phone menu, hold music, a screening prompt, a long-greeting receptionist and a real voicemail, with every hard
realtime habit switched on (both handshake events, tool calls without `response_id` before the last audio, audio
at 5x real time, revised transcripts). The gateway's
own handling of them is tested through the real services elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from haggle_gateway import dtmf
from haggle_sim.personas import Persona, PersonaBook, on_hold, phone_menu, receptionist, screened, voicemail
from haggle_sim.realtime_standin import RealtimeStandin
from haggle_sim.twilio_standin import TwilioStandin
from test_twilio_standin import ACCOUNT_SID, AUTH_TOKEN, HUMAN, create, sdk
from websockets.asyncio.server import ServerConnection

KEY = "relay-key"
DEAL = {"first_quote": 200, "counter": 150, "final": 175}
TOOLS = [{"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}}
         for n in ("record_quote", "end_call", "send_dtmf")]


class Relay:
    """A Media Streams server that joins each call to a realtime session: the smallest possible gateway."""

    def __init__(self, realtime: RealtimeStandin, twilio: TwilioStandin, business: str, drop_keys: int = 0) -> None:
        self.realtime, self.twilio, self.business = realtime, twilio, business
        self.drop_keys = drop_keys  # lose the first N `send_dtmf` presses (the menu then plays again)
        self.url = ""
        self.done = asyncio.Event()

    async def handle(self, tw: ServerConnection) -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with websockets.connect(self.realtime.url, additional_headers=headers, proxy=None) as rt:
            await rt.send(json.dumps({"type": "session.update", "session": {
                "instructions": f'You call {self.business}. opening_line: "Hi, is this {self.business}?"',
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                "audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}},
                "tools": TOOLS}}))
            state: dict[str, Any] = {"sid": None, "call": None, "bye": False}
            tasks = [asyncio.create_task(self._from_twilio(tw, rt, state)),
                     asyncio.create_task(self._from_model(tw, rt, state))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.done.set()

    async def _media(self, tw: ServerConnection, state: dict[str, Any], data: bytes) -> None:
        await tw.send(json.dumps({"event": "media", "streamSid": state["sid"],
                                  "media": {"payload": base64.b64encode(data).decode()}}))

    async def _from_twilio(self, tw: ServerConnection, rt: Any, state: dict[str, Any]) -> None:
        async for raw in tw:
            msg = json.loads(raw)
            if msg["event"] == "start":
                state["sid"], state["call"] = msg["streamSid"], msg["start"]["callSid"]
            elif msg["event"] == "media":
                await rt.send(json.dumps({"type": "input_audio_buffer.append", "audio": msg["media"]["payload"]}))
            elif msg["event"] == "mark" and msg["mark"]["name"] == "bye":
                client = sdk(self.twilio.base_url)
                await asyncio.to_thread(client.calls(state["call"]).update, status="completed")
            elif msg["event"] == "stop":
                return

    async def _from_model(self, tw: ServerConnection, rt: Any, state: dict[str, Any]) -> None:
        async for raw in rt:
            event = json.loads(raw)
            kind = event["type"]
            if kind == "response.output_audio.delta":
                await self._media(tw, state, base64.b64decode(event["delta"]))
            elif kind == "response.function_call_arguments.done":
                args = json.loads(event["arguments"])
                if event["name"] == "send_dtmf":
                    if self.drop_keys:
                        self.drop_keys -= 1
                    else:
                        await self._media(tw, state, dtmf.tones(args["digits"]))
                if event["name"] == "end_call":
                    state["bye"] = True
                await rt.send(json.dumps({"type": "conversation.item.create", "item": {
                    "type": "function_call_output", "call_id": event["call_id"], "output": '{"ok": true}'}}))
            elif kind == "response.done":
                output = event["response"]["output"]
                if state["bye"]:
                    await tw.send(json.dumps({"event": "mark", "streamSid": state["sid"], "mark": {"name": "bye"}}))
                elif output and all(o["type"] == "function_call" for o in output):
                    await rt.send(json.dumps({"type": "response.create"}))  # a silent tool turn: go on


@contextlib.asynccontextmanager
async def world(persona: Persona, drop_keys: int = 0) -> AsyncIterator[tuple[TwilioStandin, RealtimeStandin, Relay]]:
    book = PersonaBook([persona])
    async with TwilioStandin(book, ACCOUNT_SID, AUTH_TOKEN, allow_insecure_streams=True) as twilio, \
            RealtimeStandin(book, api_key=KEY, pace=5.0, chunk_ms=20, handshake="both", tool_response_id=False,
                            tools_before_last_audio=True, transcript_revisions=True) as realtime:
        relay = Relay(realtime, twilio, persona.business, drop_keys)
        server = await websockets.serve(relay.handle, "127.0.0.1", 0, compression=None)
        relay.url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/media"
        try:
            yield twilio, realtime, relay
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 5)


async def run_call(persona: Persona, timeout_s: float = 40.0, drop_keys: int = 0) -> tuple[Any, Any]:
    """Place one call through the relay; returns (the Twilio stand-in's call, the realtime session)."""
    async with world(persona, drop_keys) as (twilio, realtime, relay):
        twiml = f'<Response><Connect><Stream url="{relay.url}"/></Connect></Response>'
        call = await create(sdk(twilio.base_url), to=persona.phone, twiml=twiml)
        sim = await twilio.wait_for_call_end(call.sid, timeout=timeout_s)
        await asyncio.wait_for(relay.done.wait(), 5)
        return sim, realtime.sessions[0]


def fast(persona: Persona, **changes: Any) -> Persona:
    return Persona(**{**persona.__dict__, "ring_ms": 50, "ms_per_char": 4, **changes})


def agent_lines(session: Any) -> list[str]:
    return [r["text"] for r in session.responses if r["text"]]


def agreed_quote(session: Any) -> list[object]:
    return [c["arguments"].get("price") for c in session.tool_calls
            if c["name"] == "record_quote" and c["arguments"].get("agreed")]


@pytest.mark.parametrize("make", [
    lambda: fast(phone_menu("Ace Drain", HUMAN, **DEAL), menu_timeout_ms=3000),
    lambda: fast(receptionist("Summit Plumbing and Drain", HUMAN, **DEAL, greeting_ms=1500)),
    lambda: fast(screened("Joe's Plumbing", HUMAN, **DEAL)),
    lambda: fast(on_hold("Rapid Rooter", HUMAN, **DEAL, hold_ms=1500), pause_ms=700),
], ids=["menu", "receptionist", "screening", "hold"])
async def test_each_situation_reaches_the_agreed_price(make: Any) -> None:
    persona = make()
    sim, session = await run_call(persona)
    log = sim.streams[-1]
    spoken = [t for t in persona.turns if t.speaker == "agent" and t.text]
    assert agent_lines(session) == [t.text.replace("{business}", persona.business) for t in spoken]
    assert agreed_quote(session) == [175]
    provider = [i for i, t in enumerate(persona.turns) if t.speaker == "provider"]
    assert [ln.turn_index for ln in log.provider_lines] == provider  # every line once, in order
    assert log.talked_over_bytes == 0
    assert sim.end_reason.startswith("hangup-rest")
    if any(t.menu for t in persona.turns):
        assert (log.digits, log.menu_plays, log.wrong_digits) == ("1", 1, "")


async def test_voicemail_message_is_left_after_the_beep() -> None:
    persona = fast(voicemail("Joe's Plumbing", HUMAN, greeting_ms=1200))
    sim, session = await run_call(persona)
    log = sim.streams[-1]
    assert [ln.sound for ln in log.provider_lines] == ["speech", "beep"]
    assert log.beep_at is not None
    assert log.message_ms >= 0.9 * persona.speech_ms(agent_lines(session)[0])
    assert agent_lines(session) == [persona.turns[2].text]
    assert sim.end_reason.startswith("hangup-rest")


async def test_a_lost_key_replays_the_menu_and_both_sides_stay_in_step() -> None:
    persona = fast(phone_menu("Ace Drain", HUMAN, **DEAL), menu_timeout_ms=1500)
    sim, session = await run_call(persona, drop_keys=1)
    log = sim.streams[-1]
    assert (log.menu_plays, log.digits, session.menu_replays) == (2, "1", 1)
    assert [ln.turn_index for ln in log.provider_lines][:3] == [0, 0, 2]
    assert agreed_quote(session) == [175]
    assert log.talked_over_bytes == 0
