"""One live call: Twilio Media Stream <-> Grok realtime session.

Three tasks per call: the Twilio pump (caller audio in, mark echoes, stop), the realtime pump (model audio
out, VAD events, transcripts, tools) and a ticker (greeting gate, silence and duration limits, transcript
settling). Whatever ends the call calls `request_end(reason)`; `run()` then tears down in one place: close
the model session, hang up through REST (unless the provider already did), publish the last utterances and
CallEnded (bounded), close the stream.

Behaviour that matters on a real phone line:
- Greeting gate: never talk over the callee's "Hello?". If they speak, the model's server VAD answers when
  they stop (that answer is the greeting); if they stay silent for `greeting_wait_s`, we send the opening
  line ourselves (verbatim via `force_message`, or a `response.create`).
- Barge-in: on `speech_started` while our audio is queued at Twilio, `clear` goes out first, then the rest
  of that response is dropped, and the assistant item is truncated at what the mark echoes say was played.
- Ending: `end_call` -> once the response's audio is all sent, a `bye` mark; when it comes back in the current
  generation the goodbye has played, and only then the REST hang-up. A fallback timer covers a lost echo.
- Realtime session lost mid-call: reopened once (`_resume`) with the conversation so far replayed as
  conversation items, while the Twilio side keeps going (the callee hears silence; their audio is buffered for
  the new session). If that fails too, the call is hung up and ends with reason "realtime_error".
- Twilio's WebSocket gone without a `stop`: the call may still be up, so it is hung up through REST and ends
  with reason "twilio_stream_lost" (a `stop` or a terminal status callback means the provider hung up).

Metrics (haggle/metrics.py): audio frames in/out, realtime errors by kind, time from the stream start to the
first agent audio, and turn latency (the server's `speech_stopped` to the first audio frame of the response
that follows it, as sent to Twilio). The hot path only increments pre-bound counters.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import binascii
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from haggle_contracts import events as ev
from haggle_contracts.calls import CallContext

from haggle import metrics

from . import realtime_events as rt
from . import twilio_media as tm
from .audio import Transcoder, transcoder_for
from .outbox import EventOutbox
from .playback import EchoKind, PlaybackTracker
from .prompt import CallBrief, greeting_line
from .realtime_client import RealtimeClient, RealtimeError
from .settings import GatewaySettings
from .transcript import FinalUtterance, TranscriptAssembler

log = logging.getLogger(__name__)

TICK_S = 0.05
GREETING_RESPONSE_FALLBACK_S = 2.0
TWILIO_BYTES_PER_MS = 8  # mu-law 8 kHz
TWILIO_FRAME_MS = 20
MAX_REPLAYED_UTTERANCES = 60  # a reopened session gets at most this many earlier lines

_FRAMES_IN = metrics.AUDIO_FRAMES.labels(direction="in")
_FRAMES_OUT = metrics.AUDIO_FRAMES.labels(direction="out")


@dataclass(frozen=True)
class Frame:
    """One WebSocket receive: a text frame, a binary frame, or the end of the connection."""

    text: str | None = None
    binary: bytes | None = None
    closed: bool = False

    @property
    def size(self) -> int:
        """Bytes on the wire (UTF-8 is only measured when characters alone could hide a large frame)."""
        if self.text is not None:
            if len(self.text) * 4 > 1024:
                return len(self.text.encode("utf-8", "surrogatepass"))
            return len(self.text)
        return len(self.binary or b"")


class TwilioLink(Protocol):
    async def receive(self) -> Frame: ...

    async def send(self, text: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class LinkClosed(Exception):
    """The Twilio WebSocket is gone."""


Hangup = Callable[[str], Awaitable[None]]
# Opens a fresh realtime session for this call; the flag asks for the "resumed call" instructions.
Reopen = Callable[[bool], Awaitable[RealtimeClient]]


@dataclass
class _Response:
    id: str
    interruptible: bool = True
    forced: bool = False
    dropped: bool = False
    done: bool = False
    had_audio: bool = False
    end_call: bool = False
    tool_calls: int = 0
    items: list[str] = field(default_factory=list)
    session: int = 0  # which realtime session (0, then 1 after a reopen) produced it
    created_at: float = 0.0


@dataclass
class CallStats:
    clears: list[float] = field(default_factory=list)  # loop times a `clear` was sent
    speech_started: list[float] = field(default_factory=list)
    dropped_deltas: int = 0
    media_out: int = 0
    truncates: int = 0
    greeting: str = ""  # "auto" (model answered the hello) | "sent" (our timer) | ""
    greeting_at: float | None = None
    malformed: int = 0
    hangup_at: float | None = None
    reconnects: int = 0
    first_audio_at: float | None = None


class CallBridge:
    def __init__(
        self,
        *,
        ctx: CallContext,
        call_sid: str,
        stream_sid: str,
        link: TwilioLink,
        guard: tm.FrameGuard,
        realtime: RealtimeClient,
        settings: GatewaySettings,
        outbox: EventOutbox,
        hangup: Hangup,
        started_at: float | None = None,
        on_end: Callable[[CallBridge], None] | None = None,
        reopen: Reopen | None = None,
    ) -> None:
        self.ctx = ctx
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.settings = settings
        self._link = link
        self._guard = guard
        self._rt = realtime
        self._outbox = outbox
        self._hangup = hangup
        self._on_end = on_end
        self._reopen = reopen
        self._log = logging.LoggerAdapter(log, {"call_sid": call_sid, "job_id": ctx.job_id,
                                                "provider_id": ctx.provider_id, "call_id": ctx.call_id})
        self._loop = asyncio.get_running_loop()
        self.started_at = started_at if started_at is not None else self._loop.time()
        self.brief = CallBrief.from_context(ctx)
        self.transcoder: Transcoder = transcoder_for(settings.audio_format)
        self.tracker = PlaybackTracker()
        self.transcript = TranscriptAssembler(settle_s=settings.transcript_settle_s)
        self.stats = CallStats()
        self.end_reason: str | None = None
        self.end_detail: str | None = None  # why, for logs (e.g. what broke the realtime session)
        self._end = asyncio.Event()
        self._closed = asyncio.Event()
        self._twilio_lock = asyncio.Lock()
        self._responses: dict[str, _Response] = {}
        self._item_response: dict[str, str] = {}
        self._active: str | None = None
        self._tool_calls_seen: set[str] = set()
        self._out_buf = bytearray()
        self._out_item: str | None = None
        self._audio_ended: set[str] = set()
        self._last_activity = self.started_at
        self._greeting = "waiting"  # waiting -> sent -> done
        self._server_speaking = False
        self._last_voice_at = self.started_at
        self._auto_deadline: float | None = None
        self._greeting_sent_at: float | None = None
        self._greeting_fallback_done = False
        self._pending_forced: bool | None = None  # interruptible flag of a force_message awaiting its response
        self._bye_mark: str | None = None
        self._bye_fallback: asyncio.TimerHandle | None = None
        self._unknown_seen: set[str] = set()
        self._last_seq = 0
        self._binary_warned = False
        # Realtime session loss and reopening.
        self._session = 0
        self._rt_down = False  # the session is gone (being reopened, or not coming back)
        self._history: list[FinalUtterance] = []  # published utterances, replayed into a reopened session
        self._inbound_backlog: deque[str] = deque(maxlen=max(1, settings.reconnect_buffer_ms // TWILIO_FRAME_MS))
        # Latency measurements.
        self._speech_stopped_at: float | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle

    def request_end(self, reason: str) -> None:
        """Ask the call to end (idempotent: the first reason wins)."""
        if self.end_reason is None:
            self.end_reason = reason
            self._log.info("call %s ending: %s", self.call_sid, reason)
        self._end.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def run(self) -> str:
        """Bridge until the call ends; returns the end reason. Never raises for call-level failures."""
        self._outbox.start()
        tasks = [
            asyncio.create_task(self._guarded(self._twilio_pump(), "twilio"), name=f"twilio-{self.call_sid}"),
            asyncio.create_task(self._guarded(self._realtime_pump(), "realtime"), name=f"rt-{self.call_sid}"),
            asyncio.create_task(self._guarded(self._ticker(), "ticker"), name=f"tick-{self.call_sid}"),
        ]
        try:
            await self._end.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._finish()
        return self.end_reason or "unknown"

    async def _guarded(self, coro: Awaitable[None], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except LinkClosed as exc:
            self._log.warning("call %s: Twilio stream lost: %s", self.call_sid, exc)
            self.request_end("twilio_stream_lost")
        except RealtimeError as exc:
            self._realtime_failed(f"realtime session lost: {exc}")
        except Exception:
            self._log.exception("call %s: %s task failed", self.call_sid, name)
            self.request_end("realtime_error" if name == "realtime" else "gateway_error")

    async def _finish(self) -> None:
        reason = self.end_reason or "unknown"
        now = self._loop.time()
        if self._bye_fallback is not None:
            self._bye_fallback.cancel()
        await self._rt.close()
        if reason != "provider_hangup":
            try:
                await self._hangup(self.call_sid)
                self.stats.hangup_at = self._loop.time()
            except Exception as exc:  # closing the stream below ends the call anyway (no verb after <Connect>)
                self._log.warning("call %s: REST hang-up failed: %s", self.call_sid, exc)
        for utterance in self.transcript.flush(now):
            self._publish_utterance(utterance)
        await self._outbox.flush(self.settings.publish_flush_s)
        self._outbox.put(ev.CallEnded(
            event_id=f"end-{self.call_sid}",
            job_id=self.ctx.job_id,
            provider_id=self.ctx.provider_id,
            attempt=self.ctx.attempt,
            call_sid=self.call_sid,
            reason=reason,
            duration_s=round(max(0.0, now - self.started_at), 3),
            utterances=self.transcript.released_count,
        ))
        await self._outbox.close(self.settings.publish_flush_s)
        code = 1008 if reason == "protocol_error" else 1000
        try:
            await self._link.close(code, reason)
        except Exception:  # already closed by the peer
            self._log.debug("closing the Twilio stream failed", exc_info=True)
        self._closed.set()
        if self._on_end is not None:
            self._on_end(self)

    # ------------------------------------------------------------------------------------------------ Twilio side

    async def _send_twilio(self, text: str) -> None:
        async with self._twilio_lock:
            try:
                await self._link.send(text)
            except Exception as exc:
                raise LinkClosed(str(exc)) from exc

    async def _twilio_pump(self) -> None:
        while True:
            frame = await self._link.receive()
            if frame.closed:
                # No `stop` first: the socket died, not the call. It may still be up: `_finish` hangs up.
                self._log.warning("call %s: Twilio media stream closed without a stop", self.call_sid)
                self.request_end("twilio_stream_lost")
                return
            violation = self._guard.check(frame.size, self._loop.time())
            if violation is not None:
                self._log.warning("call %s: stream %s; closing", self.call_sid, violation)
                self.request_end("protocol_error")
                return
            if frame.text is None:
                if not self._binary_warned:
                    self._log.warning("call %s: binary frame on the media stream ignored", self.call_sid)
                    self._binary_warned = True
                self._malformed()
                continue
            try:
                message = tm.parse_message(frame.text)
            except tm.MediaMessageError as exc:
                self._log.warning("call %s: %s", self.call_sid, exc)
                self._malformed()
                continue
            await self._on_twilio(message)

    def _malformed(self) -> None:
        self.stats.malformed += 1
        if self.stats.malformed > self.settings.max_malformed_frames:
            self.request_end("protocol_error")

    async def _on_twilio(self, message: tm.TwilioMessage) -> None:
        if isinstance(message, tm.Media):
            await self._on_media(message)
        elif isinstance(message, tm.Mark):
            self._on_mark(message.mark.name)
        elif isinstance(message, tm.Stop):
            self.request_end("provider_hangup")
        elif isinstance(message, tm.Dtmf):
            self._log.info("call %s: DTMF received", self.call_sid)
        elif isinstance(message, tm.UnknownMessage):
            if message.event not in self._unknown_seen:
                self._unknown_seen.add(message.event)
                self._log.info("call %s: ignoring unknown Twilio event %r", self.call_sid, message.event)
        else:
            self._log.debug("call %s: ignoring repeated %s", self.call_sid, type(message).__name__)

    async def _on_media(self, media: tm.Media) -> None:
        _FRAMES_IN.inc()
        try:
            seq = media.sequence
            if self._last_seq and seq != self._last_seq + 1:
                self._log.debug("call %s: media sequence gap %d -> %d", self.call_sid, self._last_seq, seq)
            self._last_seq = seq
        except tm.MediaMessageError:
            pass
        payload = media.media.payload
        try:
            ulaw = media.audio()  # validates the base64 (a C loop); pcmu still forwards the original string
        except tm.MediaMessageError:
            self._malformed()
            return
        if not ulaw:
            return
        if self._greeting == "waiting":
            self._measure_voice(ulaw)
        if self._rt_down:  # kept (the most recent `reconnect_buffer_ms`) for a reopened session
            self._inbound_backlog.append(self.transcoder.to_model(payload))
            return
        await self._rt_send(rt.input_audio_append(self.transcoder.to_model(payload)))

    def _measure_voice(self, ulaw: bytes) -> None:
        """Before the greeting only: local energy, so the opening line never starts over a hello."""
        if audioop.rms(audioop.ulaw2lin(ulaw, 2), 2) >= self.settings.greeting_voice_rms:
            self._last_voice_at = self._loop.time()

    def _on_mark(self, name: str) -> None:
        echo = self.tracker.on_echo(name)
        if echo.kind == EchoKind.AUDIO:
            self._last_activity = self._loop.time()
        elif echo.kind == EchoKind.MARKER and name == self._bye_mark:
            self._log.info("call %s: goodbye played; hanging up", self.call_sid)
            self.request_end("end_call")

    # ------------------------------------------------------------------------------------------------ model side

    async def _rt_send(self, event: dict[str, Any]) -> None:
        """Send to the model. While the session is down the event is dropped (a reopened session starts from
        the replayed conversation); a failed send marks it down, and the pump's next receive reopens it."""
        if self._rt_down:
            return
        try:
            await self._rt.send(event)
        except RealtimeError as exc:
            self._rt_down = True
            self._log.info("call %s: realtime send failed: %s", self.call_sid, exc)

    async def _realtime_pump(self) -> None:
        while True:
            try:
                event = await self._rt.recv()
            except RealtimeError as exc:
                if await self._resume(exc):
                    continue
                return
            try:
                await self._on_realtime(event)
            except (RealtimeError, LinkClosed, asyncio.CancelledError):
                raise
            except Exception:
                self._log.exception("call %s: handling %s failed", self.call_sid, event.type)
            self._release_transcript()

    async def _resume(self, cause: RealtimeError) -> bool:
        """The realtime session is gone mid-call. True once a new one carries the conversation on; False when the
        call ends without one (it was ending anyway, or reopening is not allowed or failed: "realtime_error").

        How the new session learns the conversation: the published utterances are replayed as conversation
        items (user lines `input_text`, assistant lines `output_text`; `rt.history_item`). Folding them into the
        instructions as quoted transcript would also work on any server, but it would put the provider's words
        in instruction position, which issue 7 rules out; items are where the callee's words live anyway. The
        instructions only gain a fixed note (prompt.RESUMED_NOTE) that the call resumed.
        """
        self._rt_down = True
        metrics.REALTIME_ERRORS.labels(kind="session_lost").inc()
        if self._end.is_set():
            return False
        if self._bye_mark is not None or any(s.end_call for s in self._responses.values()):
            self._log.info("call %s: realtime session lost after end_call (%s); hanging up after the goodbye",
                           self.call_sid, cause)
            await self._schedule_hangup()  # no-op if already scheduled; its mark echo (or fallback) ends the call
            return False
        if self._reopen is None or self.stats.reconnects >= self.settings.realtime_reconnects:
            self._realtime_failed(f"realtime session lost again ({cause}); not reopened")
            return False
        self.stats.reconnects += 1
        self._log.warning("call %s: realtime session lost (%s); reopening it with the conversation so far",
                          self.call_sid, cause)
        await self._rt.close()
        await self._forget_lost_session()
        history = self._history[-MAX_REPLAYED_UTTERANCES:]
        resumed = any(u.role == ev.Role.ASSISTANT for u in history)
        if not resumed:  # nothing said yet: the greeting gate starts over on the new session
            self._greeting, self._greeting_fallback_done, self._auto_deadline = "waiting", False, None
        try:
            client = await asyncio.wait_for(self._reopen(resumed), self.settings.realtime_reconnect_timeout_s)
        except (RealtimeError, OSError, TimeoutError) as exc:
            metrics.REALTIME_ERRORS.labels(kind="reopen_failed").inc()
            self._realtime_failed(f"realtime session lost ({cause}); reopening failed: {exc}")
            return False
        self._rt, self._session = client, self._session + 1
        try:
            for utterance in history:
                await client.send(rt.history_item(utterance.role.value, utterance.text))
            backlog, self._inbound_backlog = list(self._inbound_backlog), deque(maxlen=self._inbound_backlog.maxlen)
            for audio in backlog:
                await client.send(rt.input_audio_append(audio))
            if resumed and (history[-1].role == ev.Role.USER or history[-1].interrupted):
                await client.send(rt.response_create())  # it is our turn: answer, or finish the cut-off line
        except RealtimeError as exc:
            metrics.REALTIME_ERRORS.labels(kind="reopen_failed").inc()
            self._realtime_failed(f"reopened realtime session lost at once: {exc}")
            return False
        self._rt_down = False
        self._last_activity = self._loop.time()
        self._log.info("call %s: realtime session reopened; %d line(s) and %d ms of audio replayed", self.call_sid,
                       len(history), len(backlog) * TWILIO_FRAME_MS)
        return True

    async def _forget_lost_session(self) -> None:
        """The lost session's responses will never finish: send the audio already here, close their transcripts."""
        if self._out_item is not None and self._out_item not in self._audio_ended:
            self._audio_ended.add(self._out_item)
            self._out_buf += self.transcoder.end_of_utterance()
            await self._flush_out()
        self._out_item = None
        self._out_buf.clear()
        for state in self._responses.values():
            if not state.done:
                state.done = state.dropped = True
        self._active = None
        self._pending_forced = None
        self._server_speaking = False
        self._speech_stopped_at = None
        for utterance in self.transcript.flush(self._loop.time()):
            self._publish_utterance(utterance)

    def _realtime_failed(self, why: str) -> None:
        self.end_detail = why
        self._inbound_backlog.clear()
        self._log.error("call %s: %s; ending the call", self.call_sid, why)
        self.request_end("realtime_error")

    async def _on_realtime(self, event: rt.ServerEvent) -> None:
        kind = event.type
        if isinstance(event, rt.AudioDelta):
            await self._on_audio_delta(event)
        elif isinstance(event, rt.SpeechStarted):
            await self._on_speech_started(event)
        elif isinstance(event, rt.SpeechStopped):
            self._on_speech_stopped()
        elif isinstance(event, rt.TranscriptDelta):
            self.transcript.assistant_delta(event.item_id, event.delta, self._loop.time(), _wall())
        elif isinstance(event, rt.TranscriptDone):
            self.transcript.assistant_done(event.item_id, event.transcript, self._loop.time(), _wall())
        elif isinstance(event, rt.AudioDone):
            await self._end_of_audio(event.response_id, event.item_id)
        elif isinstance(event, rt.InputTranscription):
            self.transcript.user_snapshot(event.item_id, event.transcript, event.is_final, self._loop.time(),
                                          _wall())
        elif isinstance(event, rt.AudioCommitted):
            if event.item_id:
                self.transcript.open(event.item_id, ev.Role.USER, self._loop.time(), _wall())
        elif isinstance(event, rt.ItemAdded):
            if event.item.role == "user" and event.item.type == "message" and event.item.id and not event.item.is_text:
                self.transcript.open(event.item.id, ev.Role.USER, self._loop.time(), _wall())
        elif isinstance(event, rt.ResponseCreated):
            self._on_response_created(event)
        elif isinstance(event, rt.OutputItemAdded):
            self._on_output_item(event)
        elif isinstance(event, rt.FunctionCallDone):
            await self._on_tool_call(event)
        elif isinstance(event, rt.ResponseDone):
            await self._on_response_done(event)
        elif isinstance(event, rt.ErrorEvent):
            if event.benign:
                self._log.debug("call %s: benign realtime error: %s", self.call_sid, event.error.message[:120])
            else:
                metrics.REALTIME_ERRORS.labels(kind="server_error").inc()
                self._log.warning("call %s: realtime error %s: %s", self.call_sid, event.error.code,
                                  event.error.message[:200])
        elif kind in ("ping", "session.updated", "session.created", "conversation.created"):
            pass
        elif kind not in self._unknown_seen:
            self._unknown_seen.add(kind)
            self._log.debug("call %s: realtime event %s not handled", self.call_sid, kind)

    def _response(self, response_id: str) -> _Response:
        state = self._responses.get(response_id)
        if state is None:
            state = self._responses[response_id] = _Response(id=response_id, session=self._session,
                                                             created_at=self._loop.time())
        return state

    def _on_response_created(self, event: rt.ResponseCreated) -> None:
        state = self._response(event.response.id)
        if self._pending_forced is not None:
            state.forced = True
            state.interruptible = self._pending_forced
            self._pending_forced = None
        self._active = state.id
        if self._greeting != "done":
            if self._greeting == "waiting":
                self.stats.greeting = "auto"
            self.stats.greeting_at = self._loop.time()
            self._greeting = "done"

    def _on_output_item(self, event: rt.OutputItemAdded) -> None:
        if event.item.type != "message" or not event.item.id:
            return
        state = self._response(event.response_id)
        state.items.append(event.item.id)
        self._item_response[event.item.id] = state.id
        if not state.dropped:
            self.transcript.open(event.item.id, ev.Role.ASSISTANT, self._loop.time(), _wall())

    async def _on_audio_delta(self, event: rt.AudioDelta) -> None:
        response_id = event.response_id or self._item_response.get(event.item_id, "")
        state = self._responses.get(response_id)
        if state is not None and state.dropped:
            self.stats.dropped_deltas += 1
            return
        if event.item_id and event.item_id not in self._item_response and response_id:
            self._item_response[event.item_id] = response_id
        try:
            audio = base64.b64decode(event.delta)
        except (binascii.Error, ValueError):
            self._log.warning("call %s: undecodable audio delta dropped", self.call_sid)
            return
        if state is not None:
            state.had_audio = True
        ulaw = self.transcoder.to_twilio(audio)
        if self._out_item is not None and self._out_item != event.item_id:
            await self._flush_out()
        self._out_item = event.item_id
        self._out_buf += ulaw
        if len(self._out_buf) >= self.settings.outbound_chunk_ms * TWILIO_BYTES_PER_MS:
            await self._flush_out()

    async def _end_of_audio(self, response_id: str, item_id: str) -> None:
        """An item's audio is complete: send the resampler's tail with it, then flush (once per item)."""
        state = self._responses.get(response_id)
        if item_id != self._out_item or (state is not None and state.dropped) or item_id in self._audio_ended:
            return
        self._audio_ended.add(item_id)
        self._out_buf += self.transcoder.end_of_utterance()
        await self._flush_out()

    async def _flush_out(self) -> None:
        if not self._out_buf or self._out_item is None:
            return
        chunk, item_id = bytes(self._out_buf), self._out_item
        self._out_buf.clear()
        mark = self.tracker.audio_sent(item_id, len(chunk) / TWILIO_BYTES_PER_MS)
        await self._send_twilio(tm.media_message(self.stream_sid, chunk))
        await self._send_twilio(tm.mark_message(self.stream_sid, mark))
        _FRAMES_OUT.inc()
        self.stats.media_out += 1
        now = self._last_activity = self._loop.time()
        if self.stats.first_audio_at is None:
            self.stats.first_audio_at = now
            metrics.ANSWER_TO_FIRST_AUDIO.observe(now - self.started_at)
        if self._speech_stopped_at is not None:
            state = self._responses.get(self._item_response.get(item_id, ""))
            if state is not None and state.created_at >= self._speech_stopped_at:
                metrics.TURN_LATENCY.observe(now - self._speech_stopped_at)
                self._speech_stopped_at = None

    async def _on_speech_started(self, event: rt.SpeechStarted) -> None:
        now = self._loop.time()
        self.stats.speech_started.append(now)
        self._last_activity = now
        self._server_speaking = True
        self._speech_stopped_at = None  # their turn is not over yet
        self._last_voice_at = now
        self._auto_deadline = None
        if event.item_id:
            self.transcript.open(event.item_id, ev.Role.USER, now, _wall())
        playing_items = self.tracker.playing_items()
        if self._out_buf and self._out_item is not None and self._out_item not in playing_items:
            playing_items.append(self._out_item)
        active = self._responses.get(self._active or "")
        responses = {self._item_response.get(i, "") for i in playing_items}
        if active is not None and not active.done:
            responses.add(active.id)
        states = [self._responses[r] for r in responses if r in self._responses]
        if not playing_items and not states:
            return
        if any(not s.interruptible for s in states):
            self._log.info("call %s: callee spoke over a non-interruptible line", self.call_sid)
            return
        # The callee is talking over us: stop the audio at Twilio first, everything else after.
        cuts = self.tracker.interrupt()
        self._out_buf.clear()
        self._out_item = None
        self.transcoder.discard_outbound()
        await self._send_twilio(tm.clear_message(self.stream_sid))
        self.stats.clears.append(self._loop.time())
        for state in states:
            state.dropped = True
        if active is not None and not active.done:
            await self._rt_send(rt.response_cancel())  # Grok auto-cancels; "no active response" is benign
        for cut in cuts:
            self.transcript.mark_interrupted(cut.item_id)
            owner = self._responses.get(self._item_response.get(cut.item_id, ""))
            if self.settings.truncate_on_barge_in and (owner is None or owner.session == self._session):
                await self._rt_send(rt.item_truncate(cut.item_id, cut.content_index, cut.audio_end_ms))
                self.stats.truncates += 1
        if self._bye_mark is not None:
            self._log.info("call %s: callee spoke over the goodbye; hang-up postponed", self.call_sid)
            self._bye_mark = None
            if self._bye_fallback is not None:
                self._bye_fallback.cancel()
                self._bye_fallback = None

    def _on_speech_stopped(self) -> None:
        now = self._loop.time()
        self._server_speaking = False
        self._last_activity = now
        self._last_voice_at = now
        self._speech_stopped_at = now
        if self._greeting == "waiting":
            self._auto_deadline = now + self.settings.greeting_auto_grace_s

    async def _on_tool_call(self, event: rt.FunctionCallDone) -> None:
        if event.call_id in self._tool_calls_seen:
            return  # Grok may repeat a function call item
        self._tool_calls_seen.add(event.call_id)
        state = self._response(event.response_id) if event.response_id else None
        if state is not None:
            state.tool_calls += 1
        args = event.parsed_arguments()
        output: dict[str, Any]
        if event.name == "record_quote":
            output = self._record_quote(event.call_id, args)
        elif event.name == "end_call":
            output = {"ok": True}
            if state is None or state.done:
                await self._schedule_hangup()
            else:
                state.end_call = True
        else:
            output = {"ok": False, "error": f"unknown tool {event.name[:40]!r}"}
        await self._rt_send(rt.function_call_output(event.call_id, output))

    def _record_quote(self, tool_call_id: str, args: dict[str, Any]) -> dict[str, Any]:
        """The model's arguments are untrusted JSON: anything that is not a finite, non-negative number, a known
        price type, a string or a boolean is recorded as unknown rather than failing the tool call."""
        price = _price(args.get("price"))
        raw_type = args.get("price_type")
        price_type = ev.PriceType(raw_type) if isinstance(raw_type, str) and raw_type in _PRICE_TYPES else \
            ev.PriceType.UNKNOWN
        conditions = args.get("conditions")
        agreed = args.get("agreed")
        self._outbox.put(ev.QuoteRecorded(
            event_id=f"quote-{self.call_sid}-{tool_call_id}",
            job_id=self.ctx.job_id,
            provider_id=self.ctx.provider_id,
            attempt=self.ctx.attempt,
            call_sid=self.call_sid,
            price=price,
            price_type=price_type,
            conditions=conditions[:500] if isinstance(conditions, str) else "",
            agreed=agreed if isinstance(agreed, bool) else None,
        ))
        return {"ok": True}

    async def _on_response_done(self, event: rt.ResponseDone) -> None:
        state = self._response(event.response.id)
        state.done = True
        if self._active == state.id:
            self._active = None
        if not state.dropped and self._out_item in state.items:
            await self._end_of_audio(state.id, self._out_item or "")
        now, wall = self._loop.time(), _wall()
        texts = event.transcripts()
        for item_id in state.items:
            self.transcript.assistant_done(item_id, texts.get(item_id), now, wall)
        if state.dropped:
            return
        if state.end_call:
            await self._schedule_hangup()
        elif state.tool_calls and not state.had_audio and event.response.status in (None, "completed"):
            await self._rt_send(rt.response_create())  # a silent tool turn: let the model continue

    async def _schedule_hangup(self) -> None:
        """After the goodbye's audio is all sent: a marker whose echo means it has played."""
        if self._bye_mark is not None:
            return
        await self._flush_out()
        self._bye_mark = self.tracker.marker("bye")
        await self._send_twilio(tm.mark_message(self.stream_sid, self._bye_mark))
        self._bye_fallback = self._loop.call_later(self.settings.hangup_fallback_s, self._bye_timeout)

    def _bye_timeout(self) -> None:
        self._log.warning("call %s: goodbye mark not echoed in %.0fs; hanging up anyway", self.call_sid,
                    self.settings.hangup_fallback_s)
        self.request_end("end_call")

    # ------------------------------------------------------------------------------------------------ timers

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)  # a periodic clock, not synchronisation
            now = self._loop.time()
            self._release_transcript()
            if self._greeting != "done" and not self._rt_down:
                await self._greeting_tick(now)
            if now - self.started_at >= self.settings.max_call_s:
                self.request_end("max_duration")
                return
            if (now - self._last_activity >= self.settings.silence_timeout_s and not self.tracker.playing
                    and not self._rt_down):
                self.request_end("silence_timeout")
                return

    async def _greeting_tick(self, now: float) -> None:
        if self._greeting == "sent":
            if (not self._greeting_fallback_done and self._greeting_sent_at is not None
                    and now - self._greeting_sent_at >= GREETING_RESPONSE_FALLBACK_S):
                self._greeting_fallback_done = True
                self._log.warning("call %s: no response to the greeting; sending response.create", self.call_sid)
                await self._rt_send(rt.response_create())
            return
        if self._server_speaking:
            return  # never talk over the callee
        if self._auto_deadline is not None:
            if now >= self._auto_deadline:
                await self._send_greeting(now)  # they finished but the server did not answer
            return
        if now - max(self.started_at, self._last_voice_at) >= self.settings.greeting_wait_s:
            await self._send_greeting(now)

    async def _send_greeting(self, now: float) -> None:
        self._greeting = "sent"
        self._greeting_sent_at = now
        self.stats.greeting = "sent"
        if self.settings.greeting_mode == "force_message":
            interruptible = self.settings.ai_disclosure != "upfront"
            self._pending_forced = interruptible
            await self._rt_send(rt.force_message(greeting_line(self.brief, self.settings.ai_disclosure),
                                                 interruptible=interruptible))
        else:
            await self._rt_send(rt.response_create())

    # ------------------------------------------------------------------------------------------------ transcript

    def _release_transcript(self) -> None:
        for utterance in self.transcript.release(self._loop.time()):
            self._publish_utterance(utterance)

    def _publish_utterance(self, u: FinalUtterance) -> None:
        self._history.append(u)
        self._outbox.put(ev.UtteranceTranscribed(
            event_id=f"utt-{self.call_sid}-{u.item_id}",
            job_id=self.ctx.job_id,
            provider_id=self.ctx.provider_id,
            attempt=self.ctx.attempt,
            call_sid=self.call_sid,
            utterance_id=u.item_id,
            seq=u.seq,
            role=u.role,
            text=u.text,
            spoken_at=u.spoken_at,
            interrupted=u.interrupted,
        ))


_PRICE_TYPES = frozenset(ev.PriceType)


def _price(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        price = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return price if math.isfinite(price) and price >= 0 else None


def _wall() -> datetime:
    return datetime.now(UTC)
