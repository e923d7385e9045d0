"""Property-based tests (hypothesis) over everything that parses input from outside: Twilio Media
Streams frames, realtime server events (parsed, then handled by a live `CallBridge`), the operator API's
`POST /jobs`, and the event codec.

The properties: a parser returns a value or raises its one documented error; a handler never raises; the API
answers 201 or a 4xx with a JSON `detail` (never a 5xx) and publishes exactly one decodable event on 201 and
nothing otherwise. Inputs are arbitrary bytes and text, arbitrary JSON, and "near-valid" messages: a valid
message with a few fields replaced by values of the wrong type, deleted, or added. The example budget keeps
the whole module to a few seconds (a few thousand examples in all).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from haggle_contracts import codec
from haggle_contracts import events as ev
from haggle_contracts import state as st
from haggle_gateway import realtime_events as rt
from haggle_gateway import twilio_media as tm
from haggle_gateway.links import Frame
from haggle_gateway.settings import GatewaySettings
from haggle_projector.api import ApiDeps, build_router
from haggle_sim.fakes import BridgeRig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs


def fuzz(examples: int) -> settings:
    """Bounded (the whole module runs in seconds in `make test`), no deadline per example (CI machines stall),
    no example database (nothing written into the checkout)."""
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------------ strategies

scalars = (hs.none() | hs.booleans() | hs.integers()
           | hs.floats(allow_nan=True, allow_infinity=True) | hs.text(max_size=24))
json_values = hs.recursive(
    scalars,
    lambda inner: hs.lists(inner, max_size=4) | hs.dictionaries(hs.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


def as_wire(value: Any) -> str:
    """JSON text as a sloppy peer could send it: Python's encoder writes NaN/Infinity tokens, which are not JSON."""
    return json.dumps(value)


@hs.composite
def near_valid(draw: hs.DrawFn, templates: list[dict[str, Any]]) -> dict[str, Any]:
    """A valid message with one to three fields (at the top or one level down) replaced, deleted or added."""
    message = copy.deepcopy(draw(hs.sampled_from(templates)))
    for _ in range(draw(hs.integers(min_value=1, max_value=3))):
        containers = [message] + [v for v in message.values() if isinstance(v, dict)]
        containers += [x for v in message.values() if isinstance(v, list) for x in v if isinstance(x, dict)]
        target = draw(hs.sampled_from(containers))
        key = draw(hs.sampled_from(sorted(target)) | hs.text(max_size=8)) if target else draw(hs.text(max_size=8))
        if draw(hs.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
    return message


# ------------------------------------------------------------------------------------------------ Twilio


SID = "MZ" + "0" * 32
TWILIO_TEMPLATES: list[dict[str, Any]] = [
    {"event": "connected", "protocol": "Call", "version": "1.0.0"},
    {"event": "start", "sequenceNumber": "1", "streamSid": SID,
     "start": {"streamSid": SID, "callSid": "CA" + "1" * 32, "accountSid": "AC" + "2" * 32, "tracks": ["inbound"],
               "customParameters": {"call_id": "c_1", "token": "t"},
               "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}},
    {"event": "media", "sequenceNumber": "2", "streamSid": SID,
     "media": {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": "//////////8="}},
    {"event": "mark", "sequenceNumber": "3", "streamSid": SID, "mark": {"name": "g0-1"}},
    {"event": "dtmf", "sequenceNumber": "4", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "1"}},
    {"event": "stop", "sequenceNumber": "5", "streamSid": SID,
     "stop": {"accountSid": "AC" + "2" * 32, "callSid": "CA" + "1" * 32}},
]


def check_twilio_frame(data: str | bytes) -> tm.TwilioMessage | None:
    """Parsing and every accessor the gateway calls: a value, or MediaMessageError."""
    try:
        message = tm.parse_message(data)
    except tm.MediaMessageError:
        return None
    if isinstance(message, tm.Media):
        for read in (lambda: message.audio(), lambda: message.sequence, lambda: message.timestamp_ms):
            try:
                read()
            except tm.MediaMessageError:
                pass
    elif isinstance(message, tm.Start):
        assert isinstance(message.stream_sid, str) and isinstance(message.call_sid, str)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in message.parameters.items())
    return message


@fuzz(600)
@given(hs.binary(max_size=300) | hs.text(max_size=300))
def test_twilio_parser_takes_any_frame(data: str | bytes) -> None:
    check_twilio_frame(data)
    frame = Frame(text=data) if isinstance(data, str) else Frame(binary=data)
    assert frame.size >= 0
    assert tm.FrameGuard(1024, 50).check(frame.size, 0.0) in (None, "frame_too_large")


@fuzz(600)
@given(json_values | near_valid(TWILIO_TEMPLATES))
def test_twilio_parser_takes_any_json(value: Any) -> None:
    parsed = check_twilio_frame(as_wire(value))
    if isinstance(value, dict) and value in TWILIO_TEMPLATES:
        assert parsed is not None


def test_twilio_templates_are_valid() -> None:
    """The near-valid messages start from messages the parser accepts (else the fuzz tests little)."""
    parsed = [tm.parse_message(json.dumps(t)) for t in TWILIO_TEMPLATES]
    assert [type(p).__name__ for p in parsed] == ["Connected", "Start", "Media", "Mark", "Dtmf", "Stop"]


# ------------------------------------------------------------------------------------------------ realtime


REALTIME_TEMPLATES: list[dict[str, Any]] = [
    {"type": "session.created", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}},
    {"type": "session.updated", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}},
                                                      "output": {"format": "audio/pcmu"}}}},
    {"type": "ping", "timestamp": 1},
    {"type": "error", "error": {"type": "invalid_request_error", "code": "x",
                                "message": "Cancellation failed: no active response found"}},
    {"type": "input_audio_buffer.speech_started", "audio_start_ms": 10, "item_id": "u1"},
    {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "u1"},
    {"type": "input_audio_buffer.committed", "item_id": "u1", "previous_item_id": None},
    {"type": "conversation.item.added", "item": {"id": "u1", "type": "message", "role": "user",
                                                 "content": [{"type": "input_audio", "transcript": None}]}},
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": "Hello?",
     "status": "completed"},
    {"type": "response.created", "response": {"id": "r1", "status": "in_progress", "output": []}},
    {"type": "response.output_item.added", "response_id": "r1", "output_index": 0,
     "item": {"id": "a1", "type": "message", "role": "assistant"}},
    {"type": "response.output_audio.delta", "response_id": "r1", "item_id": "a1", "delta": "//////////8="},
    {"type": "response.audio.delta", "response_id": "r1", "item_id": "a1", "delta": "AAAA"},
    {"type": "response.output_audio_transcript.delta", "response_id": "r1", "item_id": "a1", "delta": "Hi"},
    {"type": "response.output_audio.done", "response_id": "r1", "item_id": "a1"},
    {"type": "response.output_audio_transcript.done", "response_id": "r1", "item_id": "a1"},
    {"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "f1", "call_id": "c1",
     "name": "record_quote", "arguments": "{\"price\": 200, \"price_type\": \"flat\", \"agreed\": true}"},
    {"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "f2", "call_id": "c2",
     "name": "end_call", "arguments": "{\"reason\": \"agreed\"}"},
    {"type": "response.done", "response": {"id": "r1", "status": "completed", "output": [
        {"id": "a1", "type": "message", "content": [{"type": "output_audio", "transcript": "Hi there"}]}]}},
]


# Tool calls whose JSON arguments hold anything at all (the model's output is input too).
tool_calls = hs.builds(
    lambda name, args, call_id: as_wire({"type": "response.function_call_arguments.done", "response_id": "r1",
                                         "item_id": "f9", "call_id": call_id, "name": name,
                                         "arguments": as_wire(args)}),
    hs.sampled_from(["record_quote", "end_call", "send_dtmf", "hold", "voicemail", "other"]),
    hs.fixed_dictionaries({}, optional={k: json_values for k in ("price", "price_type", "conditions", "agreed",
                                                                 "digits", "state")})
    | json_values,
    hs.sampled_from(["c1", "c2", "c3"]),
)


def check_server_frame(data: str | bytes) -> rt.ServerEvent | None:
    try:
        event = rt.parse_server_event(data)
    except rt.RealtimeProtocolError:
        return None
    assert isinstance(event, rt.ServerEvent) and isinstance(event.type, str)
    if isinstance(event, rt.ResponseDone):
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.transcripts().items())
    elif isinstance(event, rt.FunctionCallDone):
        assert isinstance(event.parsed_arguments(), dict)
    elif isinstance(event, rt.ErrorEvent):
        assert event.benign in (True, False)
    elif isinstance(event, rt.InputTranscription):
        assert event.is_final in (True, False, None)
    elif isinstance(event, rt.ItemAdded | rt.OutputItemAdded):
        assert event.item.is_text in (True, False)
    elif isinstance(event, rt.SessionEvent):
        for direction in ("input", "output"):
            assert rt.session_audio_format(event.session, direction) is None or isinstance(
                rt.session_audio_format(event.session, direction), str)
    return event


@fuzz(600)
@given(hs.binary(max_size=300) | hs.text(max_size=300) | json_values.map(as_wire))
def test_realtime_parser_takes_any_frame(data: str | bytes) -> None:
    check_server_frame(data)


@fuzz(600)
@given(near_valid(REALTIME_TEMPLATES))
def test_realtime_parser_takes_near_valid_events(value: dict[str, Any]) -> None:
    check_server_frame(as_wire(value))


def test_realtime_templates_are_valid() -> None:
    events = [rt.parse_server_event(json.dumps(t)) for t in REALTIME_TEMPLATES]
    assert not [e for e in events if isinstance(e, rt.UnknownEvent)]


BRIDGE_SETTINGS = GatewaySettings(public_base_url="http://127.0.0.1:9", twilio_account_sid="AC" + "0" * 32,
                                  twilio_auth_token="token")


class _Failures(logging.Handler):
    """Log records that carry an exception (a handler that raised, caught and logged by its pump)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


async def _drive_bridge(frames: list[str]) -> list[ev.Event]:
    """A bridge on the in-process fakes: every frame goes through the realtime pump's dispatch (parsed first,
    as the pump would), then the call ends and everything it published is returned."""
    catcher = _Failures()
    failures = catcher.records
    logging.getLogger("haggle_gateway").addHandler(catcher)
    try:
        async with BridgeRig(BRIDGE_SETTINGS) as rig:
            for data in frames:
                event = check_server_frame(data)
                if event is not None:
                    rig.realtime.push(event)
            await rig.advance(0.01)
    finally:
        logging.getLogger("haggle_gateway").removeHandler(catcher)
    assert not failures, failures[0].getMessage()  # the pump logs (rather than raises) a failing handler
    return rig.publisher.events


@fuzz(400)
@given(hs.lists(hs.one_of(near_valid(REALTIME_TEMPLATES).map(as_wire), hs.sampled_from(REALTIME_TEMPLATES).map(as_wire),
                          tool_calls), min_size=1, max_size=25))
def test_bridge_handles_any_sequence_of_realtime_events(frames: list[str]) -> None:
    """A live bridge fed arbitrary (near-valid) event sequences: no handler raises, and what it would publish
    is valid (decodes again, contiguous utterance seqs)."""
    published = asyncio.run(_drive_bridge(frames))
    for event in published:
        assert codec.decode(codec.encode(event)) == event
    lines = [e for e in published if isinstance(e, ev.UtteranceTranscribed)]
    seqs = [e.seq for e in lines if not e.revision]
    assert seqs == list(range(len(seqs)))
    first = {e.utterance_id: e.seq for e in lines if not e.revision}
    assert all(first.get(e.utterance_id) == e.seq for e in lines if e.revision)  # a revision names its line


# ------------------------------------------------------------------------------------------------ operator API


class _Store:
    """The projection as the API reads it, in memory, with one job already there (for the 409 paths)."""

    def __init__(self) -> None:
        self.rows = {"p_taken": st.ProviderState(id="p_taken", job_id="job_taken", service_provider="A",
                                                 phone_number="+14155550100", zip_code="94110", problem="x",
                                                 max_price=100.0)}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, provider_id: str) -> st.ProviderState | None:
        return self.rows.get(provider_id)

    async def upsert(self, state: st.ProviderState) -> None:
        self.rows[state.id] = state

    async def list_job(self, job_id: str) -> list[st.ProviderState]:
        return [r for r in self.rows.values() if r.job_id == job_id]

    async def list_jobs(self, limit: int = 100) -> list[Any]:
        return []

    async def reset(self) -> None:
        self.rows.clear()


API_KEY = "fuzz-key-0123456789"
published: list[ev.Event] = []


async def _record(event: ev.Event) -> int:
    published.append(event)
    return len(published)


class ApiClient:
    """Real HTTP requests into the ASGI app (httpx's ASGI transport) on one event loop kept for the module."""

    def __init__(self, app: FastAPI) -> None:
        self._loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a crash reads as the 500 it is
        self._http = httpx.AsyncClient(transport=transport, base_url="http://api")

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self._loop.run_until_complete(self._http.post(path, content=body, headers=headers))

    def close(self) -> None:
        self._loop.run_until_complete(self._http.aclose())
        self._loop.close()


@pytest.fixture(scope="module")
def api() -> Iterator[ApiClient]:
    app = FastAPI()
    app.include_router(build_router(ApiDeps(store=_Store(), publish=_record, api_key=API_KEY)))  # type: ignore[arg-type]
    client = ApiClient(app)
    yield client
    client.close()


VALID_JOB: dict[str, Any] = {
    "job_id": "job_fuzz", "problem": "leaking kitchen faucet", "zip_code": "94110", "max_price": 200,
    "context_answers": "", "max_attempts": 2,
    "providers": [{"service_provider": "Joe's Plumbing", "phone_number": "+14155550101", "id": "p_1",
                   "zip_code": "94110", "problem": "leak", "max_price": 150, "context_answers": "x",
                   "timezone": "America/Los_Angeles"}],
}


def post_job(client: ApiClient, body: bytes, headers: dict[str, str] | None = None) -> None:
    published.clear()
    response = client.post("/jobs", body, {"content-type": "application/json", "authorization": f"Bearer {API_KEY}",
                                           **(headers or {})})
    assert response.status_code < 500, (response.status_code, response.text, body[:300])
    if response.status_code == 201:
        assert len(published) == 1 and isinstance(published[0], ev.JobStarted)
        event = published[0]
        assert codec.decode(codec.encode(event)) == event, "the API published an event consumers cannot read"
        assert math.isfinite(event.max_price)
    else:
        assert 400 <= response.status_code < 500
        assert published == [], "nothing may be published for a refused request"
        detail = response.json()["detail"]
        assert isinstance(detail, str | list) and detail


@fuzz(300)
@given(json_values)
def test_api_takes_any_json_body(api: ApiClient, value: Any) -> None:
    post_job(api, as_wire(value).encode())


@fuzz(500)
@given(near_valid([VALID_JOB]))
def test_api_takes_near_valid_jobs(api: ApiClient, value: dict[str, Any]) -> None:
    post_job(api, as_wire(value).encode())


@fuzz(200)
@given(hs.binary(max_size=200), hs.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"
                                                 ]))
def test_api_takes_any_bytes(api: ApiClient, body: bytes, content_type: str) -> None:
    post_job(api, body, {"content-type": content_type})


@fuzz(50)
@given(hs.text(alphabet=hs.characters(min_codepoint=32, max_codepoint=126), max_size=40))
def test_api_key_is_required(api: ApiClient, key: str) -> None:
    published.clear()
    response = api.post("/jobs", json.dumps(VALID_JOB).encode(), {"content-type": "application/json",
                                                                  "authorization": f"Bearer {key}"})
    assert response.status_code == 401 and response.json()["detail"] and published == []


def test_api_accepts_the_valid_job(api: ApiClient) -> None:
    post_job(api, json.dumps(VALID_JOB).encode())
    assert len(published) == 1


# ------------------------------------------------------------------------------------------------ codec


EVENT_TEMPLATES: list[dict[str, Any]] = [
    json.loads(codec.encode(e)) for e in (
        ev.JobStarted(event_id="e1", job_id="j1", problem="p", zip_code="94110", max_price=200.0,
                      providers=[ev.ProviderSpec(id="p1", service_provider="A", phone_number="+14155550101")]),
        ev.UtteranceTranscribed(event_id="e2", job_id="j1", provider_id="p1", attempt=1, call_sid="CA1",
                                utterance_id="u1", seq=0, role=ev.Role.USER, text="Hello?",
                                spoken_at=ev.utcnow()),
        ev.CallEnded(event_id="e3", job_id="j1", provider_id="p1", attempt=1, call_sid="CA1", reason="end_call"),
        ev.CallStatusChanged(event_id="e4", job_id="j1", provider_id="p1", attempt=1, call_sid="CA1",
                             status="completed"),
    )
]


@fuzz(800)
@given(hs.binary(max_size=300) | json_values.map(lambda v: as_wire(v).encode())
       | near_valid(EVENT_TEMPLATES).map(lambda v: as_wire(v).encode()))
def test_codec_raises_only_event_decode_error(data: bytes) -> None:
    try:
        event = codec.decode(data)
    except codec.EventDecodeError:
        return
    assert isinstance(event, ev.Event)
    assert codec.decode(codec.encode(event)) == event
