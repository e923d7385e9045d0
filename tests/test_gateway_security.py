"""Hostile or broken input never opens a realtime session (the paid resource) and never disturbs other calls.

Webhooks must carry a valid `X-Twilio-Signature` over the public URL; media streams must present, within the
start deadline, a `start` whose single-use token and CallSid match a stored context. The attacks run against a
gateway that is carrying a real call at the same time; the realtime stand-in counts every connection attempt.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any

import httpx
import websockets
from haggle_contracts import events as ev
from haggle_contracts.calls import ctx_key, decode_context
from haggle_sim.audio import frames, silence, speech_like
from haggle_sim.personas import PersonaBook, negotiation
from test_gateway_harness import GatewayHarness
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from test_gateway_harness import AUTH_TOKEN  # isort: skip

PERSONA = negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175, ms_per_char=12)


def start_message(call_id: Any, token: Any, call_sid: str, **extra: Any) -> str:
    params = {"call_id": call_id, "token": token} if call_id is not None else {}
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZattack", "start": {
        "accountSid": "AC1", "streamSid": "MZattack", "callSid": call_sid, "tracks": ["inbound"],
        "customParameters": params, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                    "channels": 1}, **extra}})


CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


async def connect(h: GatewayHarness) -> ClientConnection:
    return await websockets.connect(h.settings.stream_url, proxy=None, compression=None, max_size=None,
                                    open_timeout=5)


async def closed_with(ws: ClientConnection, timeout_s: float = 5.0) -> int | None:
    """Read until the server closes; returns the close code (fails if it stays open)."""

    async def drain() -> None:
        while True:
            await ws.recv()

    try:
        await asyncio.wait_for(drain(), timeout_s)
    except ConnectionClosed:
        pass
    return ws.close_code


async def attack(h: GatewayHarness, *frames_to_send: str | bytes) -> int | None:
    ws = await connect(h)
    try:
        for frame in frames_to_send:
            await ws.send(frame)
    except ConnectionClosed:
        pass
    return await closed_with(ws)


async def test_webhooks_require_a_valid_signature(nc) -> None:  # type: ignore[no-untyped-def]
    async with GatewayHarness(nc, PersonaBook([PERSONA]), prewarm_ttl_s=0.5) as h, \
            httpx.AsyncClient(trust_env=False) as http:
        ctx = h.context(PERSONA, call_sid="CA" + "1" * 32)
        await h.store(ctx)
        validator = RequestValidator(AUTH_TOKEN)
        form = {"CallSid": ctx.call_sid, "CallStatus": "ringing", "AnsweredBy": "human", "AccountSid": "AC1"}

        async def post(path: str, signature: str | None, data: dict[str, str] = form) -> httpx.Response:
            headers = {"X-Twilio-Signature": signature} if signature is not None else {}
            return await http.post(f"{h.base_url}{path}?call_id={ctx.call_id}", data=data, headers=headers)

        for path in ("/twiml", "/twilio/status", "/twilio/amd"):
            url = f"{h.base_url}{path}?call_id={ctx.call_id}"
            assert (await post(path, None)).status_code == 403
            assert (await post(path, "bm90IGEgc2lnbmF0dXJl")).status_code == 403
            # Signed for another host (what a proxy-confused gateway would rebuild), or for other params.
            other_host = validator.compute_signature(url.replace("127.0.0.1", "evil.example"), form)
            assert (await post(path, other_host)).status_code == 403
            tampered = validator.compute_signature(url, {**form, "CallStatus": "completed"})
            assert (await post(path, tampered)).status_code == 403
            # The query string is signed too: the same signature for another call id fails.
            response = await http.post(f"{h.base_url}{path}?call_id=someone_else", data=form,
                                       headers={"X-Twilio-Signature": validator.compute_signature(url, form)})
            assert response.status_code == 403
        assert h.realtime.connections == 0
        assert h.of(ev.CallStatusChanged) == [] and h.of(ev.MachineDetected) == []

        twiml_url = f"{h.base_url}/twiml?call_id={ctx.call_id}"
        response = await post("/twiml", validator.compute_signature(twiml_url, form))
        assert response.status_code == 200
        stream_url = f"ws://127.0.0.1:{h.base_url.rsplit(':', 1)[1]}/media-stream"
        assert f'<Stream url="{stream_url}">' in response.text
        params = dict(re.findall(r'<Parameter name="(\w+)" value="([^"]*)"', response.text))
        assert params == {"call_id": ctx.call_id, "token": ctx.token}
        # The valid TwiML fetch prewarmed one realtime session; unused, it is closed after its TTL.
        session = await h.realtime.wait_for_session(0, timeout_s=5)
        await session.wait_for(lambda: session.closed, timeout_s=5)
        assert h.service.registry.prewarms.expired == 1

        status_url = f"{h.base_url}/twilio/status?call_id={ctx.call_id}"
        assert (await post("/twilio/status", validator.compute_signature(status_url, form))).status_code == 204
        await h.wait_for_event(lambda e: isinstance(e, ev.CallStatusChanged) and e.status == "ringing")


async def test_rejected_streams_never_open_a_realtime_session(nc) -> None:  # type: ignore[no-untyped-def]
    async with GatewayHarness(nc, PersonaBook([PERSONA]), start_deadline_s=0.6) as h:
        legit = await h.dial(PERSONA)
        assert legit.call_sid is not None
        victim = h.context(PERSONA, call_sid="CA" + "2" * 32)  # stored, never dialed: its token must survive
        await h.store(victim)
        stats = h.service.registry.stats
        off_by_one = victim.token[:-1] + ("B" if victim.token.endswith("A") else "A")  # must differ (1 in 64 did not)

        cases: list[tuple[str, tuple[str | bytes, ...], int]] = [
            ("unknown_call", (CONNECTED, start_message("nope", "x" * 43, "CA" + "3" * 32)), 1008),
            ("unknown_call", (CONNECTED, start_message("../../etc", "x", "CA3")), 1008),
            ("unknown_call", (start_message(None, None, "CA3"),), 1008),
            ("bad_token", (CONNECTED, start_message(legit.call_id, "forged-token", legit.call_sid)), 1008),
            ("bad_token", (start_message(victim.call_id, off_by_one, victim.call_sid or ""),), 1008),
            ("wrong_call_sid", (start_message(victim.call_id, victim.token, "CA" + "9" * 32),), 1008),
            ("malformed_frame", ("{not json",), 1008),
            ("malformed_frame", (start_message(victim.call_id, 12345, victim.call_sid or ""),), 1008),
            ("binary_frame", (b"\x00\x01\x02",), 1008),
            ("frame_too_large", ("x" * 70_000,), 1009),
            ("unexpected_event_before_start", (CONNECTED, json.dumps({"event": "hello"})), 1008),
            ("unexpected_event_before_start", (json.dumps({"event": "stop", "stop": {}}),), 1008),
            ("rate_limited", (CONNECTED,) * 600, 1008),
            ("start_timeout", (CONNECTED,), 1008),
        ]
        codes = await asyncio.gather(*(attack(h, *frames_) for _, frames_, _ in cases))
        assert list(codes) == [code for _, _, code in cases]
        for reason, _, _ in cases:
            assert stats[f"rejected:{reason}"] >= 1, reason

        # Replay: once the legit stream is live, its own start (right token, right CallSid) is refused.
        await h.wait_for_event(lambda e: isinstance(e, ev.UtteranceTranscribed) and e.call_sid == legit.call_sid)
        assert await attack(h, start_message(legit.call_id, legit.token, legit.call_sid)) == 1008
        assert stats["rejected:replay"] == 1

        entry = await h.kv.get(ctx_key(victim.call_id))
        assert decode_context(entry.value).token_used is False  # failed claims burn nothing
        ended = await h.wait_ended(legit.call_sid)
        assert ended.reason == "end_call"
        assert len(h.of(ev.UtteranceTranscribed, legit.call_sid)) == len(PERSONA.turns)
        assert h.realtime.connections == 1  # the legit call's session, nothing else
        assert stats["accepted"] == 1


async def test_junk_after_start_is_ignored_and_the_call_goes_on(nc) -> None:  # type: ignore[no-untyped-def]
    """Malformed frames, binary frames, unknown events and stray marks mid-call: logged, counted, survived."""
    async with GatewayHarness(nc, PersonaBook([PERSONA])) as h:
        ctx = h.context(PERSONA, call_sid="CA" + "4" * 32)
        await h.store(ctx)
        ws = await connect(h)
        await ws.send(CONNECTED)
        await ws.send(start_message(ctx.call_id, ctx.token, ctx.call_sid or ""))
        for junk in ("{oops", b"\xff\xfe", json.dumps({"event": "surprise", "x": 1}),
                     json.dumps({"event": "media", "media": {"payload": "!!not base64!!"}}),
                     json.dumps({"event": "mark", "mark": {"name": "g99-1"}}),
                     json.dumps({"event": "dtmf", "dtmf": {"digit": "5"}}),
                     json.dumps({"event": "media", "media": {"payload": 7}})):
            await ws.send(junk)

        async def speak(audio: bytes) -> None:
            for n, frame in enumerate(frames(audio)):
                await ws.send(json.dumps({"event": "media", "sequenceNumber": str(n + 2), "streamSid": "MZattack",
                                          "media": {"track": "inbound", "chunk": str(n + 1),
                                                    "timestamp": str(20 * n),
                                                    "payload": base64.b64encode(frame).decode()}}))
                await asyncio.sleep(0.02)  # real-time pacing of the inbound track

        # The provider says hello; the agent must answer with audio on this same stream.
        sender = asyncio.create_task(speak(speech_like(400) + silence(1200)))

        async def first_media() -> dict[str, Any]:
            while True:
                message = json.loads(await ws.recv())
                if message["event"] == "media":
                    return message

        media = await asyncio.wait_for(first_media(), 5)
        assert media["streamSid"] == "MZattack" and base64.b64decode(media["media"]["payload"])
        await sender
        await ws.send(json.dumps({"event": "stop", "sequenceNumber": "999", "streamSid": "MZattack",
                                  "stop": {"accountSid": "AC1", "callSid": ctx.call_sid}}))
        ended = await h.wait_ended(ctx.call_sid or "")
        assert ended.reason == "provider_hangup"
        await closed_with(ws)
        assert h.realtime.connections == 1
        bad_appends = [e for e in h.realtime.sessions[0].received("input_audio_buffer.append")
                       if e["audio"] == "!!not base64!!"]
        assert bad_appends == []


async def test_a_stream_that_keeps_sending_junk_is_cut_off(nc) -> None:  # type: ignore[no-untyped-def]
    async with GatewayHarness(nc, PersonaBook([PERSONA]), max_malformed_frames=5) as h:
        ctx = h.context(PERSONA, call_sid="CA" + "8" * 32)
        await h.store(ctx)
        code = await attack(h, CONNECTED, start_message(ctx.call_id, ctx.token, ctx.call_sid or ""),
                            *(["{junk"] * 10))
        assert code == 1008
        ended = await h.wait_ended(ctx.call_sid or "")
        assert ended.reason == "protocol_error"
        assert h.service.registry.stats["ended:protocol_error"] == 1
