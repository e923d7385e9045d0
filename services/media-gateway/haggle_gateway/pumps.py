"""The three tasks of a live call: the Twilio pump (caller audio in, mark echoes, dtmf, stop), the realtime pump
(model events, session resumption) and the ticker (greeting gate, limits, transcript settling). Each reads one
source and hands what it read to the bridge's handlers; each owns only its own bookkeeping.

The hot path does not wake them. Both sockets offer each message to a pump's `feed` inside their read callback
(links.py, `attach`): a media frame, the echo of an audio mark and an audio delta are handled there, synchronously,
when nothing is queued ahead of them, the pump is not mid-message (`busy`) and the other side takes a write at
once; everything else goes through the task as before, in order. At hundreds of calls a task switch per message
was a fifth of the gateway's CPU (benchmarks/README.md). Ticks stay in their task: running them in a timer
callback instead measured no different.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from haggle import metrics

from . import realtime_events as rt
from . import twilio_media as tm
from .links import Clock, LinkClosed, TwilioLink
from .realtime_client import RealtimeError

if TYPE_CHECKING:
    from .bridge import CallBridge

log = logging.getLogger(__name__)

# The ticker's duties are timers in seconds (silence, call length, hold, voicemail reply, transcript settling) and
# the pacing release, which mark echoes drive anyway; only the greeting gate (when to open the call after the
# callee's hello) is heard at this scale, so the ticker runs at the finer step until the gate is done.
TICK_S = 0.1
GREETING_TICK_S = 0.05

_FRAMES_IN = metrics.AUDIO_FRAMES.labels(direction="in")


class TwilioPump:
    def __init__(self, bridge: CallBridge, link: TwilioLink, guard: tm.FrameGuard, clock: Clock,
                 max_malformed: int) -> None:
        self._bridge = bridge
        self._link = link
        self._guard = guard
        self._clock = clock
        self._max_malformed = max_malformed
        self.malformed = 0
        self._last_chunk = 0
        self._binary_warned = False
        self._unknown_seen: set[str] = set()
        # Handling a frame in `run()` (it may await): `feed` declines until it is done, so frames keep their order.
        self.busy = False

    async def run(self) -> None:
        bridge, guard, clock, receive = self._bridge, self._guard, self._clock, self._link.receive
        while True:
            self.busy = False
            frame = await receive()
            self.busy = True
            if frame.closed:
                # No `stop` first: the socket died, not the call. It may still be up: the bridge hangs up.
                log.warning("call %s: Twilio media stream closed without a stop", bridge.call_sid)
                bridge.request_end("twilio_stream_lost")
                return
            text, size = frame.text, frame.size
            violation = guard.check_size(size)
            if violation is None and text is not None:
                try:
                    message: tm.TwilioMessage | None = tm.parse_message(text)
                except tm.MediaMessageError as exc:
                    log.warning("call %s: %s", bridge.call_sid, exc)
                    message = None
            else:
                message = None
            # The echoes of our own marks answer what we sent (all at once after a `clear`): they are not the
            # peer's traffic and do not count against its rate (docs/twilio-media-streams.md, "Marks").
            if violation is None and not (isinstance(message, tm.Mark) and bridge.out.tracker.expected(
                    message.mark.name)):
                violation = guard.check(size, clock.now())
            if violation is not None:
                log.warning("call %s: stream %s; closing", bridge.call_sid, violation)
                bridge.request_end("protocol_error")
                return
            if text is None:
                if not self._binary_warned:
                    log.warning("call %s: binary frame on the media stream ignored", bridge.call_sid)
                    self._binary_warned = True
                self._malformed()
                continue
            if message is None:
                self._malformed()
                continue
            if isinstance(message, tm.Media):  # five frames in six: straight to the handler, one coroutine less
                await self._media(message)
            else:
                await self._dispatch(message)

    def _malformed(self) -> None:
        self.malformed += 1
        if self.malformed > self._max_malformed:
            self._bridge.request_end("protocol_error")

    async def _dispatch(self, message: tm.TwilioMessage) -> None:
        bridge = self._bridge
        if isinstance(message, tm.Mark):
            await bridge.on_mark(message.mark.name)
        elif isinstance(message, tm.Stop):
            bridge.request_end("provider_hangup")
        elif isinstance(message, tm.Dtmf):
            bridge.on_dtmf(message.dtmf.digit)
        elif isinstance(message, tm.UnknownMessage):
            if message.event not in self._unknown_seen:
                self._unknown_seen.add(message.event)
                log.info("call %s: ignoring unknown Twilio event %r", bridge.call_sid, message.event)
        else:
            log.debug("call %s: ignoring repeated %s", bridge.call_sid, type(message).__name__)

    def feed(self, text: str) -> bool:
        """A text frame straight from the socket's read callback, before any task wakes. True when it was a media
        frame and was handled here (forwarded to the model at once, or kept while the session is down); False
        leaves the frame to `run()`, which sees it as if this had not been called. The link calls this only when
        nothing is queued ahead of the frame, so order holds. Media is five frames in six: this spares each a task
        switch and the coroutines of the path below."""
        if self.busy or not text.isascii():
            return False  # `run()` is mid-frame; or it measures and judges this one (a Media Streams frame is ASCII)
        try:
            message = tm.parse_message(text)
        except tm.MediaMessageError:
            return False
        bridge = self._bridge
        if isinstance(message, tm.Mark):
            return self._mark_now(message.mark.name, len(text))
        if not isinstance(message, tm.Media) or not bridge.keeper.can_send_now():
            return False
        if self._guard.check(len(text), self._clock.now()) is not None:
            return False  # `run()` checks it again (no tokens were taken) and closes the stream
        ulaw = self._accept_media(message)
        if ulaw:
            bridge.on_caller_audio_now(ulaw, message.media.payload)
        return True

    def _mark_now(self, name: str, size: int) -> bool:
        """The echo of one of our audio marks (one frame in six): credit playback and send what it lets go. Other
        marks (markers, stale or unknown names) are left to `run()`."""
        out = self._bridge.out
        if not out.tracker.audio_mark(name) or not out.can_send_now() or self._guard.check_size(size) is not None:
            return False
        self._bridge.on_audio_mark_now(name)
        return True

    async def _media(self, media: tm.Media) -> None:
        ulaw = self._accept_media(media)
        if ulaw:
            await self._bridge.on_caller_audio(ulaw, media.media.payload)

    def _accept_media(self, media: tm.Media) -> bytes | None:
        """The frame's mu-law bytes, counted; None (counted as malformed) if its payload is not base64."""
        _FRAMES_IN.inc()
        # `sequenceNumber` counts every message on the stream (mark echoes too), so gaps in it are normal;
        # `media.chunk` counts media messages only: a jump there is audio that never arrived.
        chunk = media.media.chunk
        if chunk.isdigit():
            n = int(chunk)
            if self._last_chunk and n != self._last_chunk + 1:
                log.debug("call %s: media chunk gap %d -> %d", self._bridge.call_sid, self._last_chunk, n)
            self._last_chunk = n
        try:
            return media.audio()  # validates the base64 (a C loop); pcmu still forwards the original string
        except tm.MediaMessageError:
            self._malformed()
            return None


class RealtimePump:
    def __init__(self, bridge: CallBridge) -> None:
        self._bridge = bridge
        self._unknown_seen: set[str] = set()
        self.busy = False  # as TwilioPump.busy

    def feed(self, event: rt.ServerEvent) -> bool:
        """A model event straight from the socket's read callback (none queued ahead of it). True when it was an
        audio delta and went to the line here; False leaves it to `run()`. Deltas are nearly every event: this
        spares each a task switch. What `run()` does after every event is cheap to defer for a delta: transcripts
        and line events are the ticker's work too."""
        bridge = self._bridge
        if self.busy or not isinstance(event, rt.AudioDelta) or not bridge.out.can_send_now():
            return False
        try:
            bridge.turns.on_audio_delta_now(event)
        except LinkClosed as exc:
            log.warning("call %s: Twilio stream lost: %s", bridge.call_sid, exc)
            bridge.request_end("twilio_stream_lost")
        except Exception:
            log.exception("call %s: handling %s failed", bridge.call_sid, event.type)
        return True

    async def run(self) -> None:
        bridge = self._bridge
        while True:
            self.busy = False
            try:
                event = await bridge.keeper.recv()
            except RealtimeError as exc:
                self.busy = True
                if await bridge.resume(exc):
                    continue
                return
            self.busy = True
            try:
                if isinstance(event, rt.AudioDelta):  # nearly every event: straight to its handler, one coroutine less
                    await bridge.turns.on_audio_delta(event)
                else:
                    await self._dispatch(event)
            except (RealtimeError, LinkClosed, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("call %s: handling %s failed", bridge.call_sid, event.type)
            bridge.release_transcript()
            await bridge.line_events()

    async def _dispatch(self, event: rt.ServerEvent) -> None:
        bridge, kind = self._bridge, event.type
        if isinstance(event, rt.SpeechStarted):
            await bridge.turns.on_speech_started(event)
        elif isinstance(event, rt.SpeechStopped):
            bridge.turns.on_speech_stopped()
        elif isinstance(event, rt.TranscriptDelta):
            bridge.turns.assistant_delta(event.item_id, event.delta)
        elif isinstance(event, rt.TranscriptDone):
            bridge.turns.assistant_done(event.item_id, event.transcript)
        elif isinstance(event, rt.AudioDone):
            await bridge.turns.on_audio_done(event.response_id, event.item_id)
        elif isinstance(event, rt.InputTranscription):
            bridge.turns.on_input_transcript(event)
        elif isinstance(event, rt.AudioCommitted):
            if event.item_id:
                bridge.turns.open_user_item(event.item_id)
        elif isinstance(event, rt.ItemAdded):
            if event.item.role == "user" and event.item.type == "message" and event.item.id and not event.item.is_text:
                bridge.turns.open_user_item(event.item.id)
        elif isinstance(event, rt.ResponseCreated):
            bridge.turns.on_response_created(event)
        elif isinstance(event, rt.OutputItemAdded):
            bridge.turns.on_output_item(event)
        elif isinstance(event, rt.FunctionCallDone):
            await bridge.turns.on_tool_call(event)
        elif isinstance(event, rt.ResponseDone):
            await bridge.turns.on_response_done(event)
        elif isinstance(event, rt.ErrorEvent):
            if event.benign:
                log.debug("call %s: benign realtime error: %s", bridge.call_sid, event.error.message[:120])
            else:
                metrics.REALTIME_ERRORS.labels(kind="server_error").inc()
                log.warning("call %s: realtime error %s: %s", bridge.call_sid, event.error.code,
                            event.error.message[:200])
        elif kind in ("ping", "session.updated", "session.created", "conversation.created"):
            pass  # both handshake events may arrive, in either order (docs/xai-realtime.md, "Handshake")
        elif kind not in self._unknown_seen:
            self._unknown_seen.add(kind)
            log.debug("call %s: realtime event %s not handled", bridge.call_sid, kind)


class Ticker:
    def __init__(self, bridge: CallBridge, clock: Clock) -> None:
        self._bridge = bridge
        self._clock = clock

    async def run(self) -> None:
        while True:
            # a periodic clock, not synchronisation
            await self._clock.sleep(TICK_S if self._bridge.turns.gate.done else GREETING_TICK_S)
            if await self._bridge.tick(self._clock.now()):
                return
            await self._bridge.out.seal_stalled()
