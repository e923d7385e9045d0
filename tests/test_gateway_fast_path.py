"""The synchronous path: media frames, audio-mark echoes and audio deltas handled inside the sockets' read
callbacks (no task switch), on the virtual-time rig. What it may take, it handles exactly as
the pump tasks do; what it declines, and anything while a pump is mid-event, goes through the tasks in order."""

from __future__ import annotations

import base64
import json

from haggle_gateway import realtime_events as rt
from haggle_gateway.settings import GatewaySettings
from haggle_sim.fakes import BridgeRig

SETTINGS = GatewaySettings(public_base_url="http://127.0.0.1:9", twilio_account_sid="AC" + "0" * 32,
                           twilio_auth_token="token", greeting_wait_s=1.5, greeting_auto_grace_s=0.8,
                           silence_timeout_s=20.0, hangup_fallback_s=10.0, transcript_settle_s=1.0)
FRAME = b"\x7f" * 160


def media(rig: BridgeRig, seq: int) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": rig.link.stream_sid,
                       "media": {"track": "inbound", "chunk": str(seq), "timestamp": str(20 * seq),
                                 "payload": base64.b64encode(FRAME).decode()}})


def delta(item: str = "a1", response: str = "r1") -> rt.ServerEvent:
    return rt.parse_server_event(json.dumps({"type": "response.output_audio.delta", "response_id": response,
                                             "item_id": item, "delta": base64.b64encode(FRAME).decode()}))


async def talking(rig: BridgeRig) -> None:
    """The call under way: the model's first response has started (the greeting gate is done)."""
    rig.realtime.speech("u1", started=False)
    rig.realtime.response("r0", "a0", "Hi, is this Joe's Plumbing?", audio_ms=100)
    await rig.advance(1.0)
    assert rig.bridge.turns.gate.done


async def test_a_media_frame_reaches_the_model_inside_the_read() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await talking(rig)
        pump, before = rig.bridge.twilio_pump, len(rig.realtime.of_type("input_audio_buffer.append"))
        assert pump.feed(media(rig, 1)) is True  # no task ran in between: it was sent here
        appended = rig.realtime.of_type("input_audio_buffer.append")
        assert len(appended) == before + 1 and appended[-1]["audio"] == base64.b64encode(FRAME).decode()


async def test_frames_wait_for_a_pump_that_is_mid_frame() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await talking(rig)
        twilio, realtime = rig.bridge.twilio_pump, rig.bridge.realtime_pump
        twilio.busy = realtime.busy = True  # as while `run()` awaits inside a handler
        assert twilio.feed(media(rig, 1)) is False
        assert realtime.feed(delta()) is False
        twilio.busy = realtime.busy = False
        assert twilio.feed(media(rig, 2)) is True
        assert realtime.feed(delta()) is True


async def test_what_the_read_path_declines_goes_through_the_task() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await talking(rig)
        pump = rig.bridge.twilio_pump
        assert pump.feed('{"event":"dtmf","streamSid":"MZ","dtmf":{"digit":"5"}}') is False
        assert pump.feed("{not json") is False
        assert pump.feed('{"event":"mark","streamSid":"MZ","mark":{"name":"g0-99999"}}') is False  # not ours
        assert pump.malformed == 0  # judged by `run()` when it receives them, not here
        rig.link.inject({"event": "media", "streamSid": rig.link.stream_sid, "media": {"payload": "@@@"}})
        await rig.advance(0.1)
        assert pump.malformed == 1  # a bad payload still counts (through `run()`)


async def test_an_audio_delta_is_played_inside_the_read_and_marked_as_the_task_would() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await talking(rig)
        rig.realtime.emit({"type": "response.created", "response": {"id": "r1", "status": "in_progress"}})
        rig.realtime.emit({"type": "response.output_item.added", "response_id": "r1", "output_index": 0,
                           "item": {"id": "a1", "type": "message", "role": "assistant"}})
        await rig.advance(0.05)
        sent = len(rig.link.of_kind("media"))
        for _ in range(10):
            assert rig.bridge.realtime_pump.feed(delta()) is True
        assert len(rig.link.of_kind("media")) == sent + 10
        # one mark per ~100 ms of audio, as through the task (outbound.MARK_EVERY_MS)
        await rig.advance(1.0)
        assert not rig.bridge.out.tracker.playing  # every chunk credited by the echoes that came back


async def test_a_delta_waits_while_a_send_to_twilio_is_in_progress() -> None:
    async with BridgeRig(SETTINGS) as rig:
        await talking(rig)
        out = rig.bridge.out
        await out._lock.acquire()  # a send awaiting the link (the transport's buffer was full)
        try:
            assert not out.can_send_now()
            assert rig.bridge.realtime_pump.feed(delta()) is False
        finally:
            out._lock.release()
