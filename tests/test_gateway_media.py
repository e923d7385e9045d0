"""Wire formats: Twilio Media Streams messages, the per-stream frame guard, and xAI realtime events."""

from __future__ import annotations

import base64
import json

import pytest
from haggle_gateway import realtime_events as rt
from haggle_gateway import twilio_media as tm
from haggle_gateway.run import gateway_settings
from haggle_gateway.settings import GatewaySettings, mask_phone, mask_secret

from haggle.config import ConfigError, Settings

START = {
    "event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
    "start": {"accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1", "tracks": ["inbound"],
              "customParameters": {"call_id": "c1", "token": "tok"},
              "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
}


def test_every_twilio_event_parses() -> None:
    start = tm.parse_message(json.dumps(START))
    assert isinstance(start, tm.Start)
    assert (start.stream_sid, start.call_sid, start.parameters) == ("MZ1", "CA1", {"call_id": "c1", "token": "tok"})
    assert isinstance(tm.parse_message('{"event":"connected","protocol":"Call","version":"1.0.0"}'), tm.Connected)
    media = tm.parse_message(json.dumps({"event": "media", "sequenceNumber": "4", "streamSid": "MZ1", "media": {
        "track": "inbound", "chunk": "2", "timestamp": "5", "payload": base64.b64encode(b"\xff\x7f").decode()}}))
    assert isinstance(media, tm.Media)
    assert (media.sequence, media.timestamp_ms, media.audio()) == (4, 5, b"\xff\x7f")  # strings -> ints
    mark = tm.parse_message('{"event":"mark","sequenceNumber":"6","streamSid":"MZ1","mark":{"name":"g3-17"}}')
    assert isinstance(mark, tm.Mark) and mark.mark.name == "g3-17"
    dtmf = tm.parse_message('{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"1"}}')
    assert isinstance(dtmf, tm.Dtmf) and dtmf.dtmf.digit == "1"
    stop = tm.parse_message('{"event":"stop","sequenceNumber":"7","streamSid":"MZ1","stop":{"callSid":"CA1"}}')
    assert isinstance(stop, tm.Stop) and stop.stop.callSid == "CA1"
    unknown = tm.parse_message('{"event":"future-thing","x":1}')
    assert isinstance(unknown, tm.UnknownMessage) and unknown.event == "future-thing"


@pytest.mark.parametrize(("frame", "message"), [
    ("", "not JSON"),
    ("{nope", "not JSON"),
    ("[1,2]", "not a Media Streams message"),
    ('{"no_event": 1}', "not a Media Streams message"),
    ('{"event": 5}', "not a Media Streams message"),
    ('{"event":"media"}', "invalid 'media' message"),
    ('{"event":"mark","mark":{}}', "invalid 'mark' message"),
    ('{"event":"start","start":{"callSid":"CA1"}}', "invalid 'start' message"),
    (json.dumps({**START, "start": {**START["start"], "customParameters": {"token": 7}}}), "invalid 'start'"),
])
def test_malformed_frames_get_clear_errors(frame: str, message: str) -> None:
    with pytest.raises(tm.MediaMessageError, match=message):
        tm.parse_message(frame)


def test_bad_numbers_and_payloads_are_errors_not_crashes() -> None:
    media = tm.parse_message('{"event":"media","sequenceNumber":"x","media":{"payload":"!!","timestamp":"t"}}')
    assert isinstance(media, tm.Media)
    for accessor in (lambda: media.sequence, lambda: media.timestamp_ms, media.audio):
        with pytest.raises(tm.MediaMessageError):
            accessor()


def test_outbound_messages_use_camel_case_stream_sid() -> None:
    media = json.loads(tm.media_message("MZ9", b"\x00\xff"))
    assert media == {"event": "media", "streamSid": "MZ9", "media": {"payload": "AP8="}}
    assert json.loads(tm.mark_message("MZ9", "g0-1")) == {"event": "mark", "streamSid": "MZ9", "mark": {"name": "g0-1"}}
    assert json.loads(tm.clear_message("MZ9")) == {"event": "clear", "streamSid": "MZ9"}


def test_frame_guard_limits_size_and_rate_with_a_burst() -> None:
    guard = tm.FrameGuard(max_frame_bytes=65536, max_messages_per_s=100)
    assert guard.check(65537, 0.0) == "frame_too_large"
    assert all(guard.check(10, 0.0) is None for _ in range(200))  # the burst: 2 s worth
    assert guard.check(10, 0.0) == "rate_limited"
    assert guard.check(10, 0.5) is None  # refilled at 100/s


def test_realtime_event_parsing_accepts_both_spellings_and_unknowns() -> None:
    delta = rt.parse_server_event('{"type":"response.audio.delta","response_id":"r1","item_id":"i1","delta":"AA=="}')
    assert isinstance(delta, rt.AudioDelta) and delta.type == "response.output_audio.delta"
    assert isinstance(rt.parse_server_event('{"type":"conversation.created","conversation":{}}'), rt.SessionEvent)
    assert isinstance(rt.parse_server_event('{"type":"ping","timestamp":1}'), rt.Ping)
    unknown = rt.parse_server_event('{"type":"rate_limits.updated","rate_limits":[]}')
    assert isinstance(unknown, rt.UnknownEvent)
    drifted = rt.parse_server_event('{"type":"response.output_audio.delta","delta":12}')
    assert isinstance(drifted, rt.UnknownEvent) and drifted.type.startswith("invalid:")
    for bad in ("nope", "[]", '{"type": 3}'):
        with pytest.raises(rt.RealtimeProtocolError):
            rt.parse_server_event(bad)


def test_transcription_snapshots_and_tool_calls() -> None:
    snap = rt.parse_server_event(json.dumps({"type": "conversation.item.input_audio_transcription.completed",
                                             "item_id": "u1", "transcript": "Hel", "status": "in_progress"}))
    assert isinstance(snap, rt.InputTranscription) and snap.is_final is False
    bare = rt.parse_server_event('{"type":"conversation.item.input_audio_transcription.completed",'
                                 '"item_id":"u1","transcript":"Hello"}')
    assert isinstance(bare, rt.InputTranscription) and bare.is_final is None
    call = rt.parse_server_event(json.dumps({"type": "response.function_call_arguments.done", "call_id": "c1",
                                             "name": "record_quote", "arguments": '{"price": 200}'}))
    assert isinstance(call, rt.FunctionCallDone) and call.parsed_arguments() == {"price": 200}
    broken = rt.FunctionCallDone(type="x", call_id="c2", name="end_call", arguments="{not json")
    assert broken.parsed_arguments() == {}
    done = rt.parse_server_event(json.dumps({"type": "response.done", "response": {"id": "r1", "status": "completed",
        "output": [{"id": "i1", "type": "message", "content": [{"type": "output_audio", "transcript": "Hi"}]},
                   {"id": "f1", "type": "function_call"}]}}))
    assert isinstance(done, rt.ResponseDone) and done.transcripts() == {"i1": "Hi"}


def test_benign_errors_are_recognised() -> None:
    for message in ("Conversation already has an active response in progress: resp_1",
                    "Cancellation failed: no active response found"):
        event = rt.parse_server_event(json.dumps({"type": "error", "error": {"message": message}}))
        assert isinstance(event, rt.ErrorEvent) and event.benign
    other = rt.parse_server_event('{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}')
    assert isinstance(other, rt.ErrorEvent) and not other.benign


def settings(**overrides: object) -> GatewaySettings:
    values: dict[str, object] = {"public_base_url": "https://gw.example.com/", "twilio_account_sid": "AC1",
                                 "twilio_auth_token": "secret-token"}
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


def test_session_config_is_xai_shaped() -> None:
    session = rt.session_config(settings(), "brief", [{"type": "function", "name": "end_call"}])
    assert session["voice"] == "Rex" and session["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}  # no rate for pcmu
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert "type" not in session and "reasoning" not in session
    pcm = rt.session_config(settings(audio_format="pcm24k", reasoning_effort="none"), "b", [])
    assert pcm["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert pcm["reasoning"] == {"effort": "none"}
    assert rt.session_audio_format({"audio": {"output": {"format": {"type": "audio/pcmu"}}}}, "output") == "audio/pcmu"
    assert rt.session_audio_format({}, "output") is None


def test_settings_validate_and_keep_secrets_out_of_repr() -> None:
    s = settings(xai_api_key="xai-very-secret")
    assert s.public_base_url == "https://gw.example.com"
    assert s.stream_url == "wss://gw.example.com/media-stream"
    assert settings(public_base_url="http://127.0.0.1:8080").stream_url == "ws://127.0.0.1:8080/media-stream"
    assert s.public_url("/twiml", "call_id=c1") == "https://gw.example.com/twiml?call_id=c1"
    assert "secret" not in repr(s)
    for bad in ({"audio_format": "wav"}, {"ai_disclosure": "maybe"}, {"public_base_url": "ftp://x"},
                {"public_base_url": "https://x/?a=1"}, {"greeting_wait_s": 0}):
        with pytest.raises(ValueError):
            settings(**bad)
    env = gateway_settings(Settings.from_env({
        "PUBLIC_BASE_URL": "https://a.b", "REALTIME_AUDIO_FORMAT": "pcm24k", "AI_DISCLOSURE": "upfront",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t", "XAI_API_KEY": "k",
        "REALTIME_VOICE": "Eve", "TWILIO_PHONE_NUMBER": "+14155550100"}, dotenv=False))
    assert (env.audio_format, env.ai_disclosure, env.xai_realtime_url, env.voice, env.callback_number) == (
        "pcm24k", "upfront", "wss://api.x.ai/v1/realtime", "Eve", "+14155550100")
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        gateway_settings(Settings.from_env({"PUBLIC_BASE_URL": "https://a.b", "XAI_API_KEY": "k",
                                            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32}, dotenv=False))
    assert mask_phone("+14155550101") == "+1415***0101" and mask_secret("abcdefghijkl") == "abc…(12)"
