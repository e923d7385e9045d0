"""In-process fakes for one call bridge: the Twilio media stream, the realtime session, the event publisher, and a
virtual clock. Scenario tests drive a real `CallBridge` through them without sockets and without waiting for
wall-clock time.

Virtual time (in the spirit of livekit agents' tests/virtual_time.py, written afresh): the bridge takes a `Clock`;
`VirtualClock` only moves when a test calls `advance()`, which fires due sleeps and timers in time order and lets
the event loop run everything that became ready in between. The fakes never touch a socket, so "ready" is a finite
amount of work and the run is deterministic.

The Twilio fake plays the way Twilio does (docs/twilio-media-streams.md): audio sent to it is queued and plays at
real-time speed on the virtual clock; a mark is echoed once everything queued before it has played; `clear` drops
the queue and echoes every pending mark at once.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from haggle_contracts import events as ev
from haggle_contracts.calls import CallContext
from haggle_gateway import realtime_events as rt
from haggle_gateway.links import Frame
from haggle_gateway.realtime_client import RealtimeError

SETTLE_ROUNDS = 50  # event-loop passes per virtual instant; the fakes' work per instant is far less


class _VirtualTimer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A `Clock` that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, _VirtualTimer]] = []

    def now(self) -> float:
        return self._now

    def call_later(self, seconds: float, callback: Callable[[], None]) -> _VirtualTimer:
        timer = _VirtualTimer(callback)
        heapq.heappush(self._timers, (self._now + max(0.0, seconds), next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    async def settle(self) -> None:
        """Let every task run until it waits on something (a queue, a future, virtual time)."""
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing what falls due in order."""
        target = self._now + seconds
        await self.settle()
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
            await self.settle()
        self._now = target
        await self.settle()

    async def run_until(self, predicate: Callable[[], bool], *, limit_s: float, step_s: float = 0.05) -> None:
        """Advance in steps until `predicate()` holds; AssertionError after `limit_s` virtual seconds."""
        deadline = self._now + limit_s
        while not predicate():
            if self._now >= deadline:
                raise AssertionError(f"condition not reached within {limit_s}s of virtual time")
            await self.advance(step_s)


# ------------------------------------------------------------------------------------------------ Twilio


@dataclass
class _Queued:
    ms: float = 0.0
    mark: str | None = None


class FakeTwilioLink:
    """The Media Streams WebSocket as the bridge sees it (`TwilioLink`), with playback on the virtual clock."""

    def __init__(self, clock: VirtualClock, stream_sid: str = "MZ" + "0" * 32, *, auto_echo: bool = True) -> None:
        self.clock = clock
        self.stream_sid = stream_sid
        self.auto_echo = auto_echo
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self._inbound: asyncio.Queue[Frame] = asyncio.Queue()
        self._queue: list[_Queued] = []
        self._playing_until = clock.now()
        self._seq = itertools.count(1)
        self._timer: _VirtualTimer | None = None
        self._feed: Callable[[str], bool] | None = None

    # what the bridge calls
    async def receive(self) -> Frame:
        return await self._inbound.get()

    def attach(self, feed: Callable[[str], bool] | None) -> None:
        self._feed = feed

    @property
    def writable_now(self) -> bool:
        return self.closed is None

    async def send(self, text: str) -> None:
        self.send_now(text)

    def send_now(self, *texts: str) -> None:
        for text in texts:
            self._take(text)

    def _take(self, text: str) -> None:
        if self.closed is not None:
            raise ConnectionError("stream closed")
        message = json.loads(text)
        self.sent.append(message)
        kind = message.get("event")
        if kind == "media":
            ms = len(base64.b64decode(message["media"]["payload"])) / 8
            self._queue.append(_Queued(ms=ms))
        elif kind == "mark":
            self._queue.append(_Queued(mark=message["mark"]["name"]))
        elif kind == "clear":
            pending = [q.mark for q in self._queue if q.mark is not None]
            self._queue.clear()
            self._playing_until = self.clock.now()
            for name in pending:
                self._echo(name)
        self._schedule()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    # playback
    def _schedule(self) -> None:
        if self._timer is not None or not self._queue or not self.auto_echo:
            return
        head = self._queue[0]
        start = max(self._playing_until, self.clock.now())
        self._timer = self.clock.call_later(start + head.ms / 1000 - self.clock.now(), self._played_head)

    def _played_head(self) -> None:
        self._timer = None
        if not self._queue:
            return
        head = self._queue.pop(0)
        self._playing_until = max(self._playing_until, self.clock.now())
        if head.mark is not None:
            self._echo(head.mark)
        self._schedule()

    def _echo(self, name: str) -> None:
        self.inject({"event": "mark", "sequenceNumber": str(next(self._seq)), "streamSid": self.stream_sid,
                     "mark": {"name": name}})

    # what a test calls
    def inject(self, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        feed = self._feed
        if feed is None or not self._inbound.empty() or not feed(text):  # as the server's read callback does
            self._inbound.put_nowait(Frame(text=text))

    def caller_audio(self, ulaw: bytes) -> None:
        self.inject({"event": "media", "sequenceNumber": str(next(self._seq)), "streamSid": self.stream_sid,
                     "media": {"track": "inbound", "chunk": "1", "timestamp": "0",
                               "payload": base64.b64encode(ulaw).decode()}})

    def dtmf(self, digit: str) -> None:
        self.inject({"event": "dtmf", "sequenceNumber": str(next(self._seq)), "streamSid": self.stream_sid,
                     "dtmf": {"track": "inbound_track", "digit": digit}})

    def stop(self) -> None:
        self.inject({"event": "stop", "sequenceNumber": str(next(self._seq)), "streamSid": self.stream_sid,
                     "stop": {"accountSid": "AC", "callSid": "CA"}})

    def drop(self) -> None:
        self._inbound.put_nowait(Frame(closed=True))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("event") == kind]

    @property
    def media_ms(self) -> float:
        return sum(len(base64.b64decode(m["media"]["payload"])) / 8 for m in self.of_kind("media"))

    @property
    def queued_marks(self) -> int:
        return sum(1 for q in self._queue if q.mark is not None)

    @property
    def queued_ms(self) -> float:
        """Audio sent but not yet played (what a `clear` would drop)."""
        return sum(q.ms for q in self._queue)


# ------------------------------------------------------------------------------------------------ realtime


class FakeRealtime:
    """The model's session as the bridge sees it (`RealtimeSession`). Tests push server events with `emit`."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self._events: asyncio.Queue[rt.ServerEvent | BaseException] = asyncio.Queue()
        self.fail_sends = False
        self._feed: Callable[[rt.ServerEvent], bool] | None = None

    @property
    def writable_now(self) -> bool:
        return True

    async def send(self, event: dict[str, Any]) -> None:
        self.send_now(event)

    def send_now(self, event: dict[str, Any]) -> None:
        if self.closed or self.fail_sends:
            raise RealtimeError("fake realtime session closed")
        self.sent.append(event)

    def attach(self, feed: Callable[[rt.ServerEvent], bool] | None) -> None:
        self._feed = feed

    async def recv(self) -> rt.ServerEvent:
        item = await self._events.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self) -> None:
        self.closed = True

    def emit(self, event: dict[str, Any]) -> None:
        self.push(rt.parse_server_event(json.dumps(event)))

    def push(self, event: rt.ServerEvent) -> None:
        feed = self._feed
        if feed is None or not self._events.empty() or not feed(event):  # as the client's read callback does
            self._events.put_nowait(event)

    def lose(self, why: str = "connection lost") -> None:
        self._events.put_nowait(RealtimeError(why))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.sent if e.get("type") == kind]

    # a few server turns, as the model sends them (docs/xai-realtime.md)
    def speech(self, item_id: str, *, started: bool = True) -> None:
        kind = "input_audio_buffer.speech_started" if started else "input_audio_buffer.speech_stopped"
        self.emit({"type": kind, "item_id": item_id, "audio_start_ms": 0, "audio_end_ms": 0})

    def user_transcript(self, item_id: str, text: str) -> None:
        self.emit({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                   "transcript": text, "status": "completed"})

    def response(self, response_id: str, item_id: str, text: str, *, audio_ms: int = 400, done: bool = True,
                 pcmu: bool = True) -> None:
        """A spoken response: created, its item, audio in 20 ms deltas, transcript, and (optionally) done."""
        self.emit({"type": "response.created", "response": {"id": response_id, "status": "in_progress"}})
        self.emit({"type": "response.output_item.added", "response_id": response_id, "output_index": 0,
                   "item": {"id": item_id, "type": "message", "role": "assistant"}})
        self.audio(response_id, item_id, audio_ms)
        if done:
            self.finish(response_id, item_id, text)

    def audio(self, response_id: str, item_id: str, ms: int) -> None:
        chunk = base64.b64encode(b"\x7f" * 160).decode()  # 20 ms of mu-law near-silence
        for _ in range(max(1, ms // 20)):
            self.emit({"type": "response.output_audio.delta", "response_id": response_id, "item_id": item_id,
                       "delta": chunk})

    def finish(self, response_id: str, item_id: str, text: str, *, status: str = "completed") -> None:
        self.emit({"type": "response.output_audio.done", "response_id": response_id, "item_id": item_id})
        self.emit({"type": "response.output_audio_transcript.done", "response_id": response_id, "item_id": item_id,
                   "transcript": text})
        self.emit({"type": "response.done", "response": {"id": response_id, "status": status, "output": [
            {"id": item_id, "type": "message", "content": [{"type": "output_audio", "transcript": text}]}]}})

    def tool_call(self, name: str, arguments: dict[str, Any], *, call_id: str, response_id: str | None = None) -> None:
        event: dict[str, Any] = {"type": "response.function_call_arguments.done", "item_id": f"fc-{call_id}",
                                 "call_id": call_id, "name": name, "arguments": json.dumps(arguments)}
        if response_id is not None:
            event["response_id"] = response_id
        self.emit(event)


# ------------------------------------------------------------------------------------------------ publisher


@dataclass
class FakePublisher:
    """The event publisher (`EventPublisher`): keeps what it is given."""

    events: list[ev.Event] = field(default_factory=list)

    async def publish(self, event: ev.Event) -> int:
        self.events.append(event)
        return len(self.events)

    def of_type(self, kind: type[ev.Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def call_context(**overrides: Any) -> CallContext:
    """A call's context as the dispatcher stores it."""
    values: dict[str, Any] = dict(call_id="c_1", job_id="job1", provider_id="p1", attempt=1,
                                  service_provider="Joe's Plumbing", phone_number="+14155550101", problem="leak",
                                  zip_code="94110", max_price=180.0, token="t")
    values.update(overrides)
    return CallContext(**values)


# ------------------------------------------------------------------------------------------------ a whole bridge


class BridgeRig:
    """A `CallBridge` wired to the fakes on a virtual clock. Use `async with BridgeRig(settings) as rig:`."""

    def __init__(self, settings: Any, *, ctx: CallContext | None = None, reopen: Any = None,
                 max_messages_per_s: float | None = None) -> None:
        from haggle_gateway import twilio_media as tm
        from haggle_gateway.bridge import CallBridge
        from haggle_gateway.outbox import EventOutbox

        self.clock = VirtualClock()
        self.link = FakeTwilioLink(self.clock)
        self.realtime = FakeRealtime()
        self.publisher = FakePublisher()
        self.hangups: list[str] = []
        self.settings = settings
        rate = max_messages_per_s if max_messages_per_s is not None else settings.max_messages_per_s
        self.guard = tm.FrameGuard(settings.max_frame_bytes, rate)
        self.bridge = CallBridge(ctx=ctx or call_context(), call_sid="CA1", stream_sid=self.link.stream_sid,
                                 link=self.link, guard=self.guard, realtime=self.realtime, settings=settings,
                                 outbox=EventOutbox(self.publisher), hangup=self._hangup, reopen=reopen,
                                 clock=self.clock)
        self._task: asyncio.Task[str] | None = None

    async def _hangup(self, call_sid: str) -> None:
        self.hangups.append(call_sid)

    async def __aenter__(self) -> BridgeRig:
        self._task = asyncio.create_task(self.bridge.run())
        await self.clock.settle()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None and not self._task.done():
            self.bridge.request_end("test_over")
            await self.clock.advance(0.1)
            await asyncio.wait_for(self._task, 5.0)

    @property
    def twilio_malformed(self) -> int:
        return self.bridge.twilio_pump.malformed

    @property
    def ended(self) -> bool:
        return self._task is not None and self._task.done()

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)

    async def until(self, predicate: Callable[[], bool], *, limit_s: float = 30.0) -> None:
        await self.clock.run_until(predicate, limit_s=limit_s)

    async def ended_with(self, *, limit_s: float = 60.0) -> ev.CallEnded:
        await self.until(lambda: self.ended, limit_s=limit_s)
        assert self._task is not None
        await self._task
        ended = self.publisher.of_type(ev.CallEnded)
        assert len(ended) == 1, ended
        return ended[0]
