"""The load generator: N simulated calls that play both Twilio and the realtime model around a relay under test.

One process plays both ends so both directions are timed on one clock:
- the Twilio side: one Media Streams client per call (`connected`, `start`, then a 20 ms `media` frame every
  20 ms; `mark`s are echoed at once, as Twilio does when playback keeps up);
- the model side: a WebSocket server speaking just enough of the realtime protocol (`session.created`,
  `session.updated` echoing the requested format, `response.created`, `response.output_item.added`), then one
  20 ms `response.output_audio.delta` every 20 ms per session.
All frames of all calls are sent by one shared ticker. Calls are spread over `SLOTS` phases of the 20 ms period,
as independent phone calls are, so the system under test sees a steady stream rather than N-frame bursts.

Latency: with `pcmu` every frame's first 8 bytes carry a magic and a global frame id, so the receiver looks up
the send time (and loss is exact: a frame id never received). With `pcm24k` the relay resamples, which destroys
embedded bytes, so frames are matched by order within their call (20 ms in, 20 ms out, in order).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import struct
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import msgspec
from haggle_sim.audio import speech_like

from .wsraw import WsEndpoint

log = logging.getLogger(__name__)

FRAME_S = 0.020
ULAW_FRAME = 160  # 20 ms of mu-law 8 kHz
PCM24K_FRAME = 960  # 20 ms of PCM16 24 kHz
SLOTS = 10  # phases of the 20 ms period the calls are spread over
MAGIC = b"HgB1"
_ID = struct.Struct("<I")
_FILL = b"\xff" * (ULAW_FRAME - len(MAGIC) - _ID.size)  # mu-law silence after the id
CALLER_AUDIO = ("silence", "speech")
_SPEECH_MS = 10_000  # looped; each call starts at its own point in it
_PCM24K_SILENCE_B64 = base64.b64encode(bytes(PCM24K_FRAME)).decode("ascii")
_CALL_IN_INSTRUCTIONS = re.compile(r"Bench Call (\d+)")
_CALL_ID = re.compile(r"^b(\d+)_")


def make_call_id(index: int, suffix: str) -> str:
    return f"b{index:04d}_{suffix}"


def business_name(index: int) -> str:
    """The provider name a call's context carries; the model side reads its call index back from the prompt."""
    return f"Bench Call {index:04d}"


def perf() -> float:
    return time.perf_counter()


class FrameLog:
    """Send and receive times of every frame of one direction, indexed by a global frame id.

    Two latencies per frame: `frame` (its own send -> receive) and `forwarding` (send of the newest frame in
    the message that delivered it -> receive). They differ only where the relay coalesces frames into larger
    messages: the difference is the deliberate hold, the rest is the forwarding cost.
    """

    def __init__(self) -> None:
        self.sent = array("d")
        self.recv = array("d")
        self.ref = array("d")
        self.duplicates = 0
        self.strays = 0  # payloads that carry no frame we sent

    def new(self, now: float) -> int:
        self.sent.append(now)
        self.recv.append(0.0)
        self.ref.append(0.0)
        return len(self.sent) - 1

    @property
    def next_id(self) -> int:
        return len(self.sent)

    def got(self, fids: list[int], now: float) -> None:
        """The frames one message delivered, oldest first."""
        size = len(self.recv)
        valid = [f for f in fids if 0 <= f < size]
        self.strays += len(fids) - len(valid)
        if not valid:
            return
        newest = max(self.sent[f] for f in valid)
        for fid in valid:
            if self.recv[fid] == 0.0:
                self.recv[fid] = now
                self.ref[fid] = newest
            else:
                self.duplicates += 1

    def window(self, start: int, end: int) -> tuple[list[float], list[float], int]:
        """Frames sent in [start, end): sorted frame latencies (ms), sorted forwarding latencies (ms), lost."""
        frame: list[float] = []
        fwd: list[float] = []
        lost = 0
        sent, recv, ref = self.sent, self.recv, self.ref
        for i in range(start, min(end, len(sent))):
            r = recv[i]
            if r == 0.0:
                lost += 1
            else:
                frame.append((r - sent[i]) * 1000.0)
                fwd.append((r - ref[i]) * 1000.0)
        frame.sort()
        fwd.sort()
        return frame, fwd, lost


class _OutMedia(msgspec.Struct):
    payload: str = ""


class _OutMark(msgspec.Struct):
    name: str = ""


class _TwilioOut(msgspec.Struct):
    event: str = ""
    media: _OutMedia | None = None
    mark: _OutMark | None = None


class _ModelIn(msgspec.Struct):
    type: str = ""
    audio: str = ""


_twilio_out = msgspec.json.Decoder(_TwilioOut)
_model_in = msgspec.json.Decoder(_ModelIn)


@dataclass
class CallSpec:
    index: int
    call_id: str
    token: str
    call_sid: str
    stream_sid: str


@dataclass
class Counters:
    twilio_connected: int = 0
    twilio_closed: int = 0
    model_sessions: int = 0
    model_streaming: int = 0
    model_closed: int = 0
    marks_echoed: int = 0
    clears: int = 0
    malformed: int = 0
    connect_errors: list[str] = field(default_factory=list)


class TwilioCall(WsEndpoint):
    """The Twilio end of one media stream."""

    def __init__(self, gen: LoadGenerator, spec: CallSpec, host: str) -> None:
        super().__init__(client=True, path="/media-stream", host=host,
                         headers={"User-Agent": "Twilio.TmeWs/1.0"})
        self.gen = gen
        self.spec = spec
        self._seq = 0
        self._chunk = 0  # media messages only, as Twilio numbers media.chunk
        self._rx_bytes = 0
        self._voice = (spec.index * 7919 * ULAW_FRAME) % len(gen.voice) if gen.voice else 0

    def on_open(self) -> None:
        s = self.spec
        self.gen.counters.twilio_connected += 1
        self.send_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        self._seq = 1
        self.send_text(json.dumps({
            "event": "start", "sequenceNumber": "1", "streamSid": s.stream_sid,
            "start": {"accountSid": "AC" + "0" * 32, "streamSid": s.stream_sid, "callSid": s.call_sid,
                      "tracks": ["inbound"], "customParameters": {"call_id": s.call_id, "token": s.token},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        }))
        self.gen.add_sender(s.index, self.send_media, twilio=True)

    def send_media(self) -> None:
        now = perf()
        fid = self.gen.inbound.new(now)
        if not self.gen.embedded_ids:
            self.gen.in_order[self.spec.index].append(fid)
        voice = self.gen.voice
        if voice:  # the callee talking: the rest of the frame from the looped speech
            at = self._voice
            self._voice = (at + ULAW_FRAME) % len(voice)
            fill = voice[at + 8:at + ULAW_FRAME]
        else:
            fill = _FILL
        payload = base64.b64encode(MAGIC + _ID.pack(fid) + fill).decode("ascii")
        self._seq += 1
        self._chunk += 1
        chunk = self._chunk
        self.send_text(
            f'{{"event":"media","sequenceNumber":"{self._seq}","media":{{"track":"inbound","chunk":"{chunk}",'
            f'"timestamp":"{chunk * 20}","payload":"{payload}"}},"streamSid":"{self.spec.stream_sid}"}}')

    def on_text(self, payload: bytes) -> None:
        try:
            msg = _twilio_out.decode(payload)
        except msgspec.DecodeError:
            self.gen.counters.malformed += 1
            return
        if msg.event == "media" and msg.media is not None:
            try:
                audio = base64.b64decode(msg.media.payload)
            except (binascii.Error, ValueError):
                self.gen.counters.malformed += 1
                return
            self.gen.outbound_audio(self.spec.index, audio, perf())
        elif msg.event == "mark" and msg.mark is not None:
            self._seq += 1
            self.send_text(f'{{"event":"mark","sequenceNumber":"{self._seq}","streamSid":"{self.spec.stream_sid}",'
                           f'"mark":{{"name":"{msg.mark.name}"}}}}')
            self.gen.counters.marks_echoed += 1
        elif msg.event == "clear":
            self.gen.counters.clears += 1

    def stop(self) -> None:
        """Hang up like Twilio: a `stop` message, then the close handshake."""
        self._seq += 1
        self.send_text(f'{{"event":"stop","sequenceNumber":"{self._seq}","streamSid":"{self.spec.stream_sid}",'
                       f'"stop":{{"accountSid":"AC{"0" * 32}","callSid":"{self.spec.call_sid}"}}}}')
        self.close(1000)

    def on_closed(self) -> None:
        self.gen.counters.twilio_closed += 1
        self.gen.remove_sender(self.spec.index, twilio=True)


class ModelSession(WsEndpoint):
    """The realtime-model end of one session."""

    def __init__(self, gen: LoadGenerator) -> None:
        super().__init__(client=False)
        self.gen = gen
        self.index: int | None = None
        self._events = 0
        self._format = "audio/pcmu"
        self._streaming = False

    def accept(self, path: str, headers: dict[str, str]) -> bool:
        call_id = parse_qs(urlsplit(path).query).get("call_id", [""])[0]
        if call_id:  # the relay names the call; the gateway's session is recognised by its prompt instead
            found = _CALL_ID.match(call_id)
            if found is None:
                return False
            self.index = int(found.group(1))
        return True

    def _eid(self) -> str:
        self._events += 1
        return f"evt_{self._events}"

    def on_open(self) -> None:
        self.gen.counters.model_sessions += 1
        self.send_text(json.dumps({"type": "session.created", "event_id": self._eid(),
                                   "session": {"id": "sess_bench", "model": "bench"}}))

    def on_text(self, payload: bytes) -> None:
        try:
            head = _model_in.decode(payload)
        except msgspec.DecodeError:
            self.gen.counters.malformed += 1
            return
        if head.type == "input_audio_buffer.append":
            try:
                audio = base64.b64decode(head.audio)
            except (binascii.Error, ValueError):
                self.gen.counters.malformed += 1
                return
            if self.index is not None:
                self.gen.inbound_audio(self.index, audio, perf())
        elif head.type == "session.update":
            self._configure(json.loads(payload))

    def _configure(self, event: dict[str, object]) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            return
        if self.index is None:
            found = _CALL_IN_INSTRUCTIONS.search(str(session.get("instructions") or ""))
            if found:
                self.index = int(found.group(1))
        fmt = ((session.get("audio") or {}).get("input") or {}).get("format") or {"type": "audio/pcmu"}
        self._format = fmt.get("type", "audio/pcmu") if isinstance(fmt, dict) else str(fmt)
        self.send_text(json.dumps({"type": "session.updated", "event_id": self._eid(),
                                   "session": {"audio": {"input": {"format": fmt}, "output": {"format": fmt}}}}))
        if self._streaming or self.index is None:
            if self.index is None:
                self.gen.counters.malformed += 1
            return
        self._streaming = True
        idx = self.index
        self._resp, self._item = f"resp_{idx}", f"item_{idx}"
        self.send_text(json.dumps({"type": "response.created", "event_id": self._eid(),
                                   "response": {"id": self._resp, "status": "in_progress", "output": []}}))
        self.send_text(json.dumps({"type": "response.output_item.added", "event_id": self._eid(),
                                   "response_id": self._resp, "output_index": 0,
                                   "item": {"id": self._item, "type": "message", "role": "assistant",
                                            "status": "in_progress"}}))
        self._prefix = (f'{{"type":"response.output_audio.delta","response_id":"{self._resp}",'
                        f'"item_id":"{self._item}","output_index":0,"content_index":0,"event_id":"d')
        self.gen.counters.model_streaming += 1
        self.gen.add_sender(idx, self.send_delta, twilio=False)

    def send_delta(self) -> None:
        now = perf()
        fid = self.gen.outbound.new(now)
        if self.gen.embedded_ids:
            delta = base64.b64encode(MAGIC + _ID.pack(fid) + _FILL).decode("ascii")
        else:
            assert self.index is not None
            self.gen.out_order[self.index].append(fid)
            delta = _PCM24K_SILENCE_B64
        self.send_text(f'{self._prefix}{fid}","delta":"{delta}"}}')

    def on_closed(self) -> None:
        self.gen.counters.model_closed += 1
        if self.index is not None and self._streaming:
            self.gen.remove_sender(self.index, twilio=False)


class LoadGenerator:
    """Owns the model server, the calls, the shared ticker and the two frame logs."""

    def __init__(self, *, audio_format: str = "pcmu") -> None:
        if audio_format not in ("pcmu", "pcm24k"):
            raise ValueError(f"audio_format must be pcmu or pcm24k, got {audio_format!r}")
        self.audio_format = audio_format
        self.embedded_ids = audio_format == "pcmu"
        # What the callees say after each frame's id: mu-law silence (b"") or speech-like audio (simulators'
        # haggle_sim.audio), which reaches the gateway's per-frame listening (the voicemail-beep detector)
        self.voice = b""
        self.model_frame = ULAW_FRAME if self.embedded_ids else PCM24K_FRAME
        self.inbound = FrameLog()  # Twilio -> model
        self.outbound = FrameLog()  # model -> Twilio
        self.in_order: dict[int, deque[int]] = {}
        self.out_order: dict[int, deque[int]] = {}
        self._in_rest: dict[int, int] = {}
        self._out_rest: dict[int, int] = {}
        self.counters = Counters()
        self.calls: dict[int, TwilioCall] = {}
        self._slots: list[dict[tuple[int, bool], Callable[[], None]]] = [{} for _ in range(SLOTS)]
        self.sending = False
        self.tick_lag = array("d")  # ms the ticker ran behind its schedule, one entry per slot
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.model_port = 0

    def set_caller_audio(self, kind: str) -> None:
        if kind not in CALLER_AUDIO:
            raise ValueError(f"caller audio must be one of {CALLER_AUDIO}, got {kind!r}")
        self.voice = speech_like(_SPEECH_MS, seed=1) if kind == "speech" else b""

    # ------------------------------------------------------------------------------------------- setup

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ModelSession(self), "127.0.0.1", 0, backlog=2048)
        self.model_port = self._server.sockets[0].getsockname()[1]
        self.sending = True
        self._ticker = asyncio.create_task(self._tick(), name="loadgen-ticker")

    async def stop(self) -> None:
        self.sending = False
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._server is not None:
            self._server.close()

    @property
    def realtime_url(self) -> str:
        return f"ws://127.0.0.1:{self.model_port}/v1/realtime"

    async def open_calls(self, specs: list[CallSpec], port: int, *, parallel: int = 25,
                         timeout_s: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(parallel)

        async def one(spec: CallSpec) -> None:
            self.in_order[spec.index] = deque()
            self.out_order[spec.index] = deque()
            async with gate:
                try:
                    _, proto = await asyncio.wait_for(
                        loop.create_connection(lambda: TwilioCall(self, spec, f"127.0.0.1:{port}"),
                                               "127.0.0.1", port), timeout_s)
                    await asyncio.wait_for(proto.opened, timeout_s)
                    self.calls[spec.index] = proto
                except (OSError, TimeoutError, RuntimeError) as exc:
                    self.counters.connect_errors.append(f"call {spec.index}: {type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(s) for s in specs))

    async def wait_streaming(self, n: int, timeout_s: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.counters.model_streaming < n:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)  # polling a counter the socket callbacks bump
        return True

    async def hang_up_all(self, timeout_s: float = 5.0) -> None:
        calls = list(self.calls.values())
        for call in calls:
            call.stop()
        if calls:
            await asyncio.wait([asyncio.ensure_future(c.closed) for c in calls], timeout=timeout_s)
        self.calls.clear()

    def reset(self) -> None:
        """Forget a finished step (frame logs, counters, pairings)."""
        for slot in self._slots:
            slot.clear()
        self.inbound, self.outbound = FrameLog(), FrameLog()
        self.in_order.clear()
        self.out_order.clear()
        self._in_rest.clear()
        self._out_rest.clear()
        self.counters = Counters()
        self.tick_lag = array("d")
        self.sending = True

    # ------------------------------------------------------------------------------------------- ticker

    def add_sender(self, index: int, send: Callable[[], None], *, twilio: bool) -> None:
        # Twilio frames and model deltas of one call sit half a period apart.
        slot = (index + (0 if twilio else SLOTS // 2)) % SLOTS
        self._slots[slot][(index, twilio)] = send

    def remove_sender(self, index: int, *, twilio: bool) -> None:
        slot = (index + (0 if twilio else SLOTS // 2)) % SLOTS
        self._slots[slot].pop((index, twilio), None)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        period = FRAME_S / SLOTS
        start = loop.time()
        k = 0
        while True:
            target = start + k * period
            delay = target - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the pacing clock itself
            self.tick_lag.append(max(0.0, (loop.time() - target) * 1000.0))
            if self.sending:
                for send in list(self._slots[k % SLOTS].values()):
                    send()
            k += 1
            if delay <= 0 and k % SLOTS == 0:
                await asyncio.sleep(0)  # behind schedule: still let receive callbacks run once a period

    # ------------------------------------------------------------------------------------------- receive side

    def inbound_audio(self, index: int, audio: bytes, now: float) -> None:
        if self.embedded_ids:
            self._by_id(self.inbound, audio, ULAW_FRAME, now)
        else:
            self._by_order(self.inbound, self.in_order.get(index), self._in_rest, index, len(audio), PCM24K_FRAME,
                           now)

    def outbound_audio(self, index: int, audio: bytes, now: float) -> None:
        if self.embedded_ids:
            self._by_id(self.outbound, audio, ULAW_FRAME, now)
        else:
            self._by_order(self.outbound, self.out_order.get(index), self._out_rest, index, len(audio), ULAW_FRAME,
                           now)

    @staticmethod
    def _by_id(frames: FrameLog, audio: bytes, size: int, now: float) -> None:
        fids: list[int] = []
        for off in range(0, len(audio) - size + 1, size):
            if audio[off : off + 4] == MAGIC:
                fids.append(_ID.unpack_from(audio, off + 4)[0])
            else:
                frames.strays += 1
        frames.got(fids, now)

    @staticmethod
    def _by_order(frames: FrameLog, order: deque[int] | None, rest: dict[int, int], index: int, nbytes: int,
                  size: int, now: float) -> None:
        if order is None:
            frames.strays += 1
            return
        total = rest.get(index, 0) + nbytes
        count, rest[index] = divmod(total, size)
        fids: list[int] = []
        for _ in range(count):
            if not order:
                frames.strays += 1
                break
            fids.append(order.popleft())
        frames.got(fids, now)
