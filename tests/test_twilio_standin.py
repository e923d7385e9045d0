"""The Twilio stand-in against the official `twilio` SDK, a signature-checking webhook receiver and a test
Media Streams server, all on real loopback sockets.

Why these tests: every other end-to-end test trusts this stand-in to behave like Twilio. So each protocol promise
is checked from the outside, with the real SDK and the real `RequestValidator`, never through the stand-in's own
helpers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn
import websockets
from fastapi import FastAPI, Request, Response
from haggle_sim import audio
from haggle_sim.personas import Answer, Persona, PersonaBook, Turn
from haggle_sim.twilio_standin import TwilioStandin
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from websockets.asyncio.server import ServerConnection

ACCOUNT_SID = "AC" + "1f" * 16
AUTH_TOKEN = "standin-test-auth-token"
FROM = "+14155550000"
HUMAN = "+14155550111"
SPEECH_RMS = 500.0  # inbound frames above this are provider speech (speech_like stays far above it)


# --- helpers: loopback servers ----------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn in the test's loop, without taking over signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Hit:
    """One webhook request the receiver got."""

    path: str
    url: str
    method: str
    params: dict[str, str]
    signature: str
    valid: bool


@dataclass
class Receiver:
    """A tiny webhook app: records every request and checks its signature with the SDK's validator."""

    twiml: str = "<Response/>"
    twiml_status: int = 200
    hits: list[Hit] = field(default_factory=list)
    base_url: str = ""
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def app(self) -> FastAPI:
        app = FastAPI()
        validator = RequestValidator(AUTH_TOKEN)

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def hook(path: str, request: Request) -> Response:
            query = request.url.query
            url = f"{self.base_url}{request.url.path}" + (f"?{query}" if query else "")
            params = {k: str(v) for k, v in (await request.form()).items()} if request.method == "POST" else {}
            signature = request.headers.get("x-twilio-signature", "")
            valid = validator.validate(url, params, signature)
            if request.method == "GET":
                params = dict(request.query_params)
            self.hits.append(Hit("/" + path, url, request.method, params, signature, valid))
            async with self.changed:
                self.changed.notify_all()
            if path == "twiml":
                return Response(self.twiml, status_code=self.twiml_status, media_type="application/xml")
            return Response(status_code=204 if path == "status204" else 200)

        return app

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    async def wait(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), within)


@contextlib.asynccontextmanager
async def receiver(twiml: str = "<Response/>", twiml_status: int = 200) -> AsyncIterator[Receiver]:
    rec = Receiver(twiml=twiml, twiml_status=twiml_status)
    server = _Server(uvicorn.Config(rec.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                    ws="none"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # uvicorn exposes no startup event; bounded
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "webhook receiver did not start"
    rec.base_url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        yield rec
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)


@dataclass
class Session:
    """One media WebSocket the stand-in opened to the test server."""

    ws: ServerConnection
    messages: list[tuple[float, Any]] = field(default_factory=list)  # (loop time, parsed JSON) in order
    inbox: asyncio.Queue[tuple[float, Any] | None] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def next_event(self, name: str, within: float = 5.0) -> tuple[float, dict[str, Any]]:
        async def find() -> tuple[float, dict[str, Any]]:
            while True:
                item = await self.inbox.get()
                if item is None:
                    raise AssertionError(f"socket closed before a {name!r} message")
                if item[1].get("event") == name:
                    return item

        return await asyncio.wait_for(find(), within)

    async def speech_start(self, within: float = 5.0) -> float:
        """Loop time of the next inbound frame carrying provider speech."""
        while True:
            at, msg = await self.next_event("media", within)
            if audio.rms_ulaw(base64.b64decode(msg["media"]["payload"])) > SPEECH_RMS:
                return at

    async def speech_end(self, within: float = 5.0, silent_frames: int = 5) -> float:
        """Loop time once provider speech was followed by `silent_frames` silent frames."""
        await self.speech_start(within)
        quiet = 0
        while quiet < silent_frames:
            at, msg = await self.next_event("media", within)
            loud = audio.rms_ulaw(base64.b64decode(msg["media"]["payload"])) > SPEECH_RMS
            quiet = 0 if loud else quiet + 1
        return at

    async def send(self, msg: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(msg if isinstance(msg, str | bytes) else json.dumps(msg))

    async def play(self, stream_sid: str, data: bytes) -> None:
        await self.send({"event": "media", "streamSid": stream_sid,
                         "media": {"payload": base64.b64encode(data).decode()}})


class StreamServer:
    """A Media Streams WebSocket server standing in for the media gateway."""

    def __init__(self) -> None:
        self.sessions: asyncio.Queue[Session] = asyncio.Queue()
        self.headers: list[dict[str, str]] = []
        self.url = ""

    async def __aenter__(self) -> StreamServer:
        self._server = await websockets.serve(self._handle, "127.0.0.1", 0, compression=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/media"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.headers.append(dict(ws.request.headers))
        session = Session(ws)
        await self.sessions.put(session)
        loop = asyncio.get_running_loop()
        try:
            async for raw in ws:
                item = (loop.time(), json.loads(raw))
                session.messages.append(item)
                await session.inbox.put(item)
        except websockets.ConnectionClosed:
            pass
        finally:
            await session.inbox.put(None)
            session.closed.set()

    async def session(self, within: float = 5.0) -> Session:
        return await asyncio.wait_for(self.sessions.get(), within)

    def twiml(self, **parameters: str) -> str:
        params = "".join(f'<Parameter name="{k}" value="{v}"/>' for k, v in parameters.items())
        return f'<Response><Connect><Stream url="{self.url}">{params}</Stream></Connect></Response>'


def sdk(base_url: str, token: str = AUTH_TOKEN) -> Client:
    client = Client(ACCOUNT_SID, token)
    client.api.base_url = base_url
    return client


async def create(client: Client, **kwargs: Any) -> Any:
    """The SDK is synchronous (requests); keep the loop free for the stand-in while it runs."""
    kwargs.setdefault("from_", FROM)
    return await asyncio.to_thread(client.calls.create, **kwargs)


def standin(*personas: Persona, **options: Any) -> TwilioStandin:
    return TwilioStandin(PersonaBook(list(personas)), ACCOUNT_SID, AUTH_TOKEN, **options)


def human(phone: str = HUMAN, *turns: Turn, **kwargs: Any) -> Persona:
    kwargs.setdefault("ring_ms", 50)
    kwargs.setdefault("ms_per_char", 20)
    return Persona(business="Joe's Plumbing", phone=phone, turns=turns or (Turn("provider", "Hello?"),), **kwargs)


# --- audio helpers ------------------------------------------------------------------------------------------


def test_audio_helpers() -> None:
    speech = audio.speech_like(1000, seed=3)
    assert len(speech) == 8000 and speech == audio.speech_like(1000, seed=3)
    assert speech != audio.speech_like(1000, seed=4)
    frames = list(audio.frames(speech))
    assert len(frames) == 50 and all(len(f) == 160 for f in frames)
    assert min(audio.rms_ulaw(f) for f in frames[1:-1]) > 2 * SPEECH_RMS  # loud enough for an energy VAD
    assert audio.silence(20) == b"\xff" * 160 and audio.rms_ulaw(audio.silence(100)) == 0.0
    assert [len(f) for f in audio.frames(b"\x00" * 170)] == [160, 160]
    assert list(audio.frames(b"\x00" * 170))[1][10:] == b"\xff" * 150
    assert audio.rms_ulaw(b"") == 0.0


# --- REST API with the official SDK -------------------------------------------------------------------------


async def test_sdk_create_fetch_update_hangup() -> None:
    async with standin(human()) as twilio, StreamServer() as media:
        client = sdk(twilio.base_url)
        call = await create(client, to=HUMAN, twiml=media.twiml(token="t0k"), time_limit=60)
        assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid)
        assert (call.status, call.to, call._from, call.account_sid) == ("queued", HUMAN, FROM, ACCOUNT_SID)
        assert call.date_created is not None and call.direction == "outbound-api"

        session = await media.session()
        await session.next_event("start")
        fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
        assert fetched.status == "in-progress" and fetched.start_time is not None

        updated = await asyncio.to_thread(client.calls(call.sid).update, status="completed")
        assert updated.status == "completed"
        _, stop = await session.next_event("stop")
        assert stop["stop"] == {"accountSid": ACCOUNT_SID, "callSid": call.sid}
        await asyncio.wait_for(session.closed.wait(), 5)

        sim = await twilio.wait_for_call_end(call.sid, timeout=5)
        assert sim.end_reason == "hangup-rest-completed" and sim.status == "completed"
        fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
        assert fetched.status == "completed" and fetched.duration is not None
        again = await asyncio.to_thread(client.calls(call.sid).update, status="completed")
        assert again.status == "completed"  # hanging up an ended call succeeds

        with pytest.raises(TwilioRestException) as err:
            await asyncio.to_thread(client.calls("CA" + "0" * 32).fetch)
        assert (err.value.status, err.value.code) == (404, 20404)


async def test_wrong_auth_token_is_401() -> None:
    async with standin(human()) as twilio:
        with pytest.raises(TwilioRestException) as err:
            await create(sdk(twilio.base_url, token="wrong"), to=HUMAN, twiml="<Response/>")
        assert (err.value.status, err.value.code) == (401, 20003)
        assert twilio.calls == []


async def test_invalid_numbers_are_21211() -> None:
    bad = Persona(business="Gone Plumbing", phone="+14155550999", answer="invalid-number")
    async with standin(bad) as twilio:
        client = sdk(twilio.base_url)
        for to in ("+14155550999", "415-555-0100"):
            with pytest.raises(TwilioRestException) as err:
                await create(client, to=to, twiml="<Response/>")
            assert (err.value.status, err.value.code) == (400, 21211)
            assert to in err.value.msg
        assert twilio.calls == [] and twilio.stats.created_at == []


async def test_hangup_while_ringing_cancels() -> None:
    async with standin(human(ring_ms=5000)) as twilio, receiver() as hooks:
        client = sdk(twilio.base_url)
        call = await create(client, to=HUMAN, twiml="<Response/>", status_callback=f"{hooks.base_url}/status",
                            status_callback_event=["ringing"])
        await hooks.wait(lambda: len(hooks.on("/status")) == 1)
        updated = await asyncio.to_thread(client.calls(call.sid).update, status="canceled")
        assert updated.status == "canceled"
        await twilio.wait_for_call_end(call.sid, timeout=5)
        assert [h.params["CallStatus"] for h in hooks.on("/status")] == ["ringing", "canceled"]


# --- signed webhooks ----------------------------------------------------------------------------------------


async def test_status_callbacks_and_twiml_fetch_are_signed() -> None:
    async with standin(human()) as twilio, StreamServer() as media, receiver() as hooks:
        hooks.twiml = media.twiml(token="abc", job_id="j_1")
        status_url = f"{hooks.base_url}/status?job=j_1&leg=a%20b"
        call = await create(sdk(twilio.base_url), to=HUMAN, url=f"{hooks.base_url}/twiml",
                            status_callback=status_url,
                            status_callback_event=["initiated", "ringing", "answered", "completed"])
        session = await media.session()
        _, start = await session.next_event("start")
        assert start["start"]["customParameters"] == {"token": "abc", "job_id": "j_1"}
        await session.ws.close()  # the gateway closing the socket ends <Connect>; no verb follows: call ends
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)

    assert sim.end_reason == "stream-closed" and sim.status == "completed"
    statuses = hooks.on("/status")
    assert [h.params["CallStatus"] for h in statuses] == ["initiated", "ringing", "in-progress", "completed"]
    assert [h.params["SequenceNumber"] for h in statuses] == ["0", "1", "2", "3"]
    assert all(h.valid for h in hooks.hits), [(h.path, h.url) for h in hooks.hits if not h.valid]
    assert all(h.url.endswith("/status?job=j_1&leg=a%20b") for h in statuses)
    final = statuses[-1].params
    assert final["CallSid"] == call.sid and final["AccountSid"] == ACCOUNT_SID
    assert final["Direction"] == "outbound-api" and final["CallbackSource"] == "call-progress-events"
    assert final["CallDuration"].isdigit() and final["To"] == HUMAN and final["From"] == FROM
    # The validator really checks: another token or another URL does not validate.
    other = RequestValidator("not-the-token")
    assert not other.validate(statuses[0].url, statuses[0].params, statuses[0].signature)
    assert not RequestValidator(AUTH_TOKEN).validate(f"{hooks.base_url}/status", statuses[0].params,
                                                     statuses[0].signature)
    twiml_hit = hooks.on("/twiml")[0]
    assert twiml_hit.params["CallStatus"] == "in-progress" and twiml_hit.params["CallSid"] == call.sid
    assert [r.status_code for r in sim.status_callbacks] == [200, 200, 200, 200]
    # The media WebSocket upgrade carries a signature over the stream url (no params).
    assert RequestValidator(AUTH_TOKEN).validate(media.url, {}, media.headers[0]["x-twilio-signature"])


@pytest.mark.parametrize(
    ("answer", "phone", "events", "method", "expected"),
    [
        ("busy", "+14155550201", ["initiated", "ringing"], "POST", ["initiated", "busy"]),
        ("no-answer", "+14155550202", ["ringing"], "GET", ["ringing", "no-answer"]),
        ("failed", "+14155550203", ["ringing", "answered"], "POST", ["failed"]),
        (None, "+14155550299", [], "POST", ["no-answer"]),  # a number no persona owns never picks up
    ],
)
async def test_unanswered_outcomes(answer: Answer | None, phone: str, events: list[str], method: str,
                                   expected: list[str]) -> None:
    personas = [Persona(business="X", phone=phone, answer=answer, ring_ms=50)] if answer else []
    async with standin(*personas, unknown_ring_ms=50) as twilio, receiver() as hooks:
        call = await create(sdk(twilio.base_url), to=phone, twiml="<Response/>",
                            status_callback=f"{hooks.base_url}/status", status_callback_event=events or None,
                            status_callback_method=method)
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)
    assert [h.params["CallStatus"] for h in hooks.on("/status")] == expected
    assert all(h.valid and h.method == method for h in hooks.hits)
    assert sim.status == expected[-1] and sim.streams == [] and sim.duration == 0


async def test_twiml_webhook_403_fails_the_call() -> None:
    async with standin(human()) as twilio, receiver(twiml_status=403) as hooks:
        call = await create(sdk(twilio.base_url), to=HUMAN, url=f"{hooks.base_url}/twiml",
                            status_callback=f"{hooks.base_url}/status")
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)
    assert sim.status == "failed" and "403" in (sim.failure_reason or "")
    assert [h.params["CallStatus"] for h in hooks.on("/status")] == ["failed"]
    assert sim.streams == []


async def test_stream_url_with_query_string_fails() -> None:
    async with standin(human()) as twilio, StreamServer() as media:
        twiml = f'<Response><Connect><Stream url="{media.url}?token=abc"/></Connect></Response>'
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=twiml)
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)
        assert media.sessions.empty()
    assert sim.status == "failed" and "query string" in (sim.failure_reason or "")


# --- the media stream -------------------------------------------------------------------------------------


async def test_stream_messages_order_fields_and_pacing() -> None:
    async with standin(human()) as twilio, StreamServer() as media:
        placed = asyncio.get_running_loop().time()
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml(token="zz"))
        session = await media.session()
        first_media, _ = await session.next_event("media")
        while (await session.next_event("media"))[0] - first_media < 1.2:
            pass
        await asyncio.to_thread(sdk(twilio.base_url).calls(call.sid).update, status="completed")
        await twilio.wait_for_call_end(call.sid, timeout=5)

    msgs = [m for _, m in session.messages]
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    sid = start["streamSid"]
    assert start["event"] == "start" and start["sequenceNumber"] == "1" and re.fullmatch(r"MZ[0-9a-f]{32}", sid)
    assert start["start"] == {
        "accountSid": ACCOUNT_SID, "streamSid": sid, "callSid": call.sid, "tracks": ["inbound"],
        "customParameters": {"token": "zz"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    media_msgs = [m for m in msgs if m["event"] == "media"]
    for i, m in enumerate(media_msgs):
        assert m["sequenceNumber"] == str(i + 2) and m["streamSid"] == sid
        assert m["media"]["chunk"] == str(i + 1) and m["media"]["timestamp"] == str(20 * i)
        assert m["media"]["track"] == "inbound" and len(base64.b64decode(m["media"]["payload"])) == 160
    assert msgs[-1]["event"] == "stop" and msgs[-1]["sequenceNumber"] == str(len(media_msgs) + 2)
    # Real-time pacing from a fixed start: frame k is never sent before k*20 ms into the stream, so never received
    # sooner than that after the call was placed; and the stand-in keeps up (a busy loop delays and bunches frames,
    # then catches up, so the average stays near 50 a second). Exact intervals would measure this machine.
    times = [t for t, m in session.messages if m["event"] == "media"]
    assert all(t - placed >= 0.02 * k for k, t in enumerate(times))
    assert (len(times) - 1) / (times[-1] - times[0]) >= 25, (len(times), times[-1] - times[0])
    # Turn 0 ("Hello?", 200 ms) is spoken at once, then the provider waits for the agent: silence.
    levels = [audio.rms_ulaw(base64.b64decode(m["media"]["payload"])) for m in media_msgs]
    assert all(level > SPEECH_RMS for level in levels[1:9]) and max(levels[12:]) == 0.0


async def test_marks_echo_after_playback_and_at_once_after_clear() -> None:
    async with standin(human()) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        session = await media.session()
        _, start = await session.next_event("start")
        sid = start["streamSid"]
        stream = twilio.call(call.sid).stream  # the stand-in's live record: its own played-bytes counter
        assert stream is not None

        await session.send({"event": "mark", "streamSid": sid, "mark": {"name": "empty"}})
        _, echo = await session.next_event("mark")
        assert echo["mark"]["name"] == "empty" and stream.played_bytes == 0  # nothing buffered: back without audio

        first = audio.speech_like(400, seed=9)
        sent = asyncio.get_running_loop().time()
        await session.play(sid, first)
        await session.send({"event": "mark", "streamSid": sid, "mark": {"name": "a"}})
        at, echo = await session.next_event("mark")
        # Back once all 400 ms had played, not before (playback runs at 8 bytes a ms from arrival).
        assert echo["mark"]["name"] == "a" and stream.played_bytes == len(first) and at - sent >= 0.4, at - sent

        await session.play(sid, audio.speech_like(2000, seed=10))
        for name in ("b", "c"):
            await session.send({"event": "mark", "streamSid": sid, "mark": {"name": name}})
        while stream.played_bytes < len(first) + 8 * 100:  # let 100 ms of it play (a tick per inbound frame)
            await session.next_event("media")
        await session.send({"event": "clear", "streamSid": sid})
        echoes = [await session.next_event("mark") for _ in range(2)]
        # Back at once because of the clear: the rest of the 2 s line was dropped, not played out first.
        assert [e["mark"]["name"] for _, e in echoes] == ["b", "c"] and stream.cleared_bytes > 0

        await session.ws.close()
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)

    assert sim.stream is stream and stream.violations == []
    assert [m.event for m in stream.received] == ["mark", "media", "mark", "media", "mark", "mark", "clear"]
    assert stream.agent_bytes_received == 8 * 2400
    assert bytes(stream.played_audio[:3200]) == first
    assert 8 * 100 <= stream.played_bytes - 3200 < 8 * 2000 and stream.cleared_bytes == 8 * 2400 - stream.played_bytes
    assert sim.played_bytes == stream.played_bytes


async def test_outbound_protocol_violations_are_recorded() -> None:
    async with standin(human()) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        session = await media.session()
        _, start = await session.next_event("start")
        sid = start["streamSid"]
        payload = base64.b64encode(audio.silence(20)).decode()
        await session.send(audio.silence(20))  # raw audio in a binary frame
        await session.send("not json")
        await session.send({"event": "media", "stream_sid": sid, "media": {"payload": payload}})
        await session.send({"event": "media", "streamSid": "MZwrong", "media": {"payload": payload}})
        await session.send({"event": "media", "streamSid": sid, "media": {"payload": "***"}})
        await session.send({"event": "speak", "streamSid": sid})
        await session.send({"event": "mark", "streamSid": sid, "mark": {}})
        await session.send({"event": "mark", "streamSid": sid, "mark": {"name": "ok"}})
        await session.next_event("mark")  # processed in order: all of the above were seen before it
        await session.ws.close()
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)
    assert len(sim.violations) == 7, sim.violations
    assert "binary" in sim.violations[0] and "streamSid" in sim.violations[2]
    assert sim.agent_bytes_received == 0 and [m.event for m in sim.received] == ["mark"]


async def test_provider_takes_turns_barges_in_and_hangs_up() -> None:
    persona = human(
        HUMAN,
        Turn("provider", "Hello?"),
        Turn("agent", "Hi, is this Joe's Plumbing?"),
        Turn("provider", "Yes, speaking."),
        Turn("agent", "I have a leaking faucet and a long story to tell you about it."),
        Turn("provider", "Sorry, what?", barge_in_after_ms=300),
        Turn("agent", "Never mind."),
        hangup_after_turn=4,
    )
    async with standin(persona) as twilio, StreamServer() as media:
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml())
        session = await media.session()
        _, start = await session.next_event("start")
        sid = start["streamSid"]
        loop = asyncio.get_running_loop()

        await session.speech_end()  # "Hello?"
        t1 = loop.time()
        await session.play(sid, audio.speech_like(600, seed=1))
        p2 = await session.speech_start()  # waits for the agent's 600 ms to play, then ~300 ms
        await session.speech_end()
        t3 = loop.time()
        await session.play(sid, audio.speech_like(3000, seed=3))
        p4 = await session.speech_start()  # barge-in while the 3 s line still plays
        await session.send({"event": "clear", "streamSid": sid})
        _, stop = await session.next_event("stop")
        await asyncio.wait_for(session.closed.wait(), 5)
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)

    # Lower bounds only: the reply waits for the 600 ms to play plus the 300 ms gap, the barge-in for 300 ms of
    # the agent's line; how much later they come depends on the machine's load (the barge-in flag below shows
    # the interruption came while the agent's audio still played).
    assert p2 - t1 >= 0.6 + 0.3 - 0.03, p2 - t1
    assert p4 - t3 >= 0.3 - 0.02, p4 - t3
    lines = sim.provider_lines
    assert [(ln.turn_index, ln.barge_in) for ln in lines] == [(0, False), (2, False), (4, True)]
    assert all(ln.ended_at is not None and not ln.cut_off for ln in lines)
    assert sim.end_reason == "provider-hangup" and sim.status == "completed"
    assert stop["stop"]["callSid"] == call.sid


async def test_agent_silence_ends_at_time_limit() -> None:
    async with standin(human()) as twilio, StreamServer() as media:
        placed = asyncio.get_running_loop().time()
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=media.twiml(), time_limit=1)
        session = await media.session()
        await session.next_event("start")
        stopped, _ = await session.next_event("stop", within=15)
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)
    assert sim.end_reason == "time-limit" and sim.duration == 1
    assert stopped - placed >= 1.0  # not before the limit (how much after depends on the load)
    assert [ln.turn_index for ln in sim.provider_lines] == [0]  # only "Hello?": the agent never spoke


@pytest.mark.parametrize(("answer", "expected"), [("voicemail", "machine_start"), ("human", "human")])
async def test_async_amd_callback(answer: Answer, expected: str) -> None:
    persona = Persona(business="Joe's Plumbing", phone=HUMAN, answer=answer, ring_ms=50, ms_per_char=5,
                      turns=() if answer == "voicemail" else (Turn("provider", "Hello?"),))
    async with standin(persona) as twilio, StreamServer() as media, receiver() as hooks:
        client = sdk(twilio.base_url)
        call = await create(client, to=HUMAN, twiml=media.twiml(), machine_detection="Enable", async_amd="true",
                            async_amd_status_callback=f"{hooks.base_url}/amd")
        session = await media.session()
        await session.speech_end()  # the greeting (or "Hello?") plays on the stream while AMD runs
        await hooks.wait(lambda: bool(hooks.on("/amd")))
        fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
        await asyncio.to_thread(client.calls(call.sid).update, status="completed")
        await twilio.wait_for_call_end(call.sid, timeout=5)
    amd = hooks.on("/amd")[0]
    assert amd.valid and amd.params["AnsweredBy"] == expected and amd.params["CallSid"] == call.sid
    assert int(amd.params["MachineDetectionDuration"]) > 0
    assert fetched.answered_by == expected


async def test_sync_amd_reports_on_the_twiml_request() -> None:
    async with standin(human()) as twilio, StreamServer() as media, receiver() as hooks:
        hooks.twiml = media.twiml()
        call = await create(sdk(twilio.base_url), to=HUMAN, url=f"{hooks.base_url}/twiml",
                            machine_detection="Enable", status_callback=f"{hooks.base_url}/status")
        session = await media.session()
        await session.next_event("start")
        await session.ws.close()
        sim = await twilio.wait_for_call_end(call.sid, timeout=5)
    twiml_request = hooks.on("/twiml")[0]
    assert twiml_request.valid and twiml_request.params["AnsweredBy"] == "human"
    assert hooks.on("/status")[-1].params["AnsweredBy"] == "human" and sim.answered_by == "human"


async def test_unreachable_stream_ends_the_call() -> None:
    async with StreamServer() as gone:
        url = gone.url  # a port that was just closed: the WebSocket handshake cannot succeed
    async with standin(human()) as twilio:
        twiml = f'<Response><Connect><Stream url="{url}"/></Connect></Response>'
        call = await create(sdk(twilio.base_url), to=HUMAN, twiml=twiml)
        sim = await twilio.wait_for_call_end(call.sid, timeout=10)
    assert sim.status == "completed" and sim.end_reason == "stream-connect-failed"
    assert sim.stream is not None and sim.stream.connect_error


async def test_account_stats_and_wait_all_ended() -> None:
    busy = Persona(business="Busy Co", phone="+14155550301", answer="busy", ring_ms=800)
    async with standin(busy) as twilio:
        client = sdk(twilio.base_url)
        calls = await asyncio.gather(*(create(client, to=busy.phone, twiml="<Response/>") for _ in range(3)))
        assert twilio.stats.live == 3
        await twilio.wait_all_ended(timeout=5)
        assert {c.status for c in twilio.calls} == {"busy"} and len({c.sid for c in calls}) == 3
        assert twilio.stats.live == 0 and twilio.stats.max_live == 3 and len(twilio.stats.created_at) == 3
        with pytest.raises(KeyError):
            twilio.call("CA-unknown")
        # The list the dispatcher reconciles with: filters as the SDK sends them, paging followed by the SDK.
        since = datetime.now(UTC) - timedelta(minutes=1)
        listed = await asyncio.to_thread(client.calls.list, to=busy.phone, start_time_after=since, page_size=2)
        assert sorted(c.sid for c in listed) == sorted(c.sid for c in calls)
        assert await asyncio.to_thread(client.calls.list, to=HUMAN) == []
        later = datetime.now(UTC) + timedelta(minutes=1)
        assert await asyncio.to_thread(client.calls.list, start_time_after=later) == []
