"""One live call: Twilio Media Stream <-> Grok realtime session.

The bridge wires small parts together and holds the handlers; each part owns its own state:
- `pumps`: the Twilio pump, the realtime pump and the ticker (the three tasks of a call), and the synchronous
  path that spares them the common messages;
- `ModelTurns` (turns.py): the model's side: responses, barge-in, tools, greeting and goodbye, with
  - `GreetingGate` (greeting.py): when to open, never over the callee's "Hello?";
  - `ResponseLedger` (ledger.py): one handle per model response; what a barge-in cuts; whether a goodbye is due;
- `CallFlow` (call_flow.py): the line around the conversation: menus and key presses, hold, screening, voicemail;
- `AudioOut` (outbound.py): agent audio to Twilio, paced about a second ahead of playback, marks, `clear`;
- `PhaseState` (phases.py): greeting, conversation, menu, hold, screening, voicemail, and line silence;
- `SessionKeeper` (session_keeper.py): the realtime session and its one reopening.
It depends on protocols (links.py: `TwilioLink`, `RealtimeSession`, `Clock`), so scenarios run against the
in-process fakes in `haggle_sim.fakes` on virtual time.

Whatever ends the call calls `request_end(reason)`; `run()` then tears down in one place: close the model session,
hang up through REST (unless the provider already did), publish the last utterances and CallEnded (bounded),
close the stream.

Behaviour that matters on a real phone line:
- Barge-in: on `speech_started` while our audio is queued at Twilio, `clear` goes out first, then the rest of that
  response is dropped, and the assistant item is truncated at what the mark echoes say was played
  (docs/twilio-media-streams.md, "Marks" and "Clear").
- Ending: `end_call` -> once the response's audio is all queued, a `bye` mark after it; when it comes back in the
  current generation the goodbye has played, and only then the REST hang-up. A fallback timer covers a lost echo.
- Realtime session lost mid-call: reopened once with the conversation so far, while the Twilio side keeps going.
  If that fails too, the call is hung up and ends with reason "realtime_error".
- Twilio's WebSocket gone without a `stop`: the call may still be up, so it is hung up through REST and ends with
  reason "twilio_stream_lost" (a `stop` or a terminal status callback means the provider hung up).

Metrics (haggle/metrics.py): audio frames in/out, realtime errors by kind, time from the stream start to the
first agent audio, and turn latency (the server's `speech_stopped` to the first audio frame of the response
that follows it, as sent to Twilio). The hot path only increments pre-bound counters.
"""

from __future__ import annotations

import asyncio
import audioop
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from haggle_contracts import events as ev
from haggle_contracts import ids
from haggle_contracts.calls import CallContext

from haggle import metrics

from . import twilio_media as tm
from .audio import Transcoder, transcoder_for
from .call_flow import CallFlow
from .contexts import about_call
from .links import Clock, Frame, LinkClosed, LoopClock, RealtimeSession, TwilioLink
from .negotiation import CallNegotiation
from .outbound import AudioOut
from .outbox import EventOutbox
from .phases import PhaseState
from .playback import EchoKind
from .prompt import CallBrief
from .pumps import RealtimePump, Ticker, TwilioPump
from .realtime_client import RealtimeError
from .session_keeper import Reopen, ReopenFailed, SessionKeeper
from .settings import GatewaySettings
from .transcript import FinalUtterance, TranscriptAssembler
from .transfer import UNAVAILABLE as TRANSFER_UNAVAILABLE
from .transfer import HomeownerTransfers
from .turns import ModelTurns

__all__ = ["CallBridge", "Frame", "Hangup", "LinkClosed", "Reopen", "TwilioLink"]

log = logging.getLogger(__name__)

Hangup = Callable[[str], Awaitable[None]]


class CallBridge:
    def __init__(
        self,
        *,
        ctx: CallContext,
        call_sid: str,
        stream_sid: str,
        link: TwilioLink,
        guard: tm.FrameGuard,
        realtime: RealtimeSession,
        settings: GatewaySettings,
        outbox: EventOutbox,
        hangup: Hangup,
        started_at: float | None = None,
        on_end: Callable[[CallBridge], None] | None = None,
        reopen: Reopen | None = None,
        clock: Clock | None = None,
        transfers: HomeownerTransfers | None = None,
    ) -> None:
        self.ctx = ctx
        self.transfers = transfers
        self.transfer_to: str | None = None  # the homeowner's number once the agent asked for a transfer
        self.call_sid = call_sid
        self.settings = settings
        self.clock: Clock = clock or LoopClock()
        self.started_at = started_at if started_at is not None else self.clock.now()
        self.brief = CallBrief.from_context(ctx)
        self.negotiation = CallNegotiation(ctx, call_sid, use_competing_quotes=settings.use_competing_quotes)
        self.transcript = TranscriptAssembler(settle_s=settings.transcript_settle_s)
        self.end_reason: str | None = None
        self.end_detail: str | None = None  # why, for logs (e.g. what broke the realtime session)
        self.hangup_at: float | None = None
        self._link = link
        self._outbox = outbox
        self._hangup = hangup
        self._on_end = on_end
        self._transcoder: Transcoder = transcoder_for(settings.audio_format)
        self.phases = PhaseState(self.started_at, call_sid)
        self.turns = ModelTurns(self, settings, self.clock)
        self.flow = CallFlow(self)
        self.out = AudioOut(link, stream_sid, self._transcoder, settings.outbound_chunk_ms, self.turns.audio_sent,
                            lead_ms=settings.playback_lead_ms)
        self.keeper = SessionKeeper(realtime, reopen, max_reopens=settings.realtime_reconnects,
                                    timeout_s=settings.realtime_reconnect_timeout_s,
                                    buffer_ms=settings.reconnect_buffer_ms)
        self.twilio_pump = TwilioPump(self, link, guard, self.clock, settings.max_malformed_frames)
        self.realtime_pump = RealtimePump(self)
        self._end = asyncio.Event()
        self._closed = asyncio.Event()
        self._heard: deque[FinalUtterance] = deque()  # the callee's finished lines, for the call flow
        self._verdicts: deque[str] = deque()  # AMD verdicts, for the call flow

    # ------------------------------------------------------------------------------------------------ lifecycle

    def request_end(self, reason: str) -> None:
        """Ask the call to end (idempotent: the first reason wins)."""
        if self.end_reason is None:
            self.end_reason = reason
            log.info("call %s ending: %s", self.call_sid, reason)
        self._end.set()

    def machine_verdict(self, answered_by: str) -> None:
        """Twilio's AMD verdict for this call (evidence for the call flow, handled on the next tick)."""
        self._verdicts.append(answered_by)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def run(self) -> str:
        """Bridge until the call ends; returns the end reason. Never raises for call-level failures."""
        self._outbox.start()
        tasks = [
            asyncio.create_task(self._guarded(self.twilio_pump.run(), "twilio"), name=f"twilio-{self.call_sid}"),
            asyncio.create_task(self._guarded(self.realtime_pump.run(), "realtime"), name=f"rt-{self.call_sid}"),
            asyncio.create_task(self._guarded(Ticker(self, self.clock).run(), "ticker"), name=f"tick-{self.call_sid}"),
        ]
        self._link.attach(self.twilio_pump.feed)
        self.keeper.attach(self.realtime_pump.feed)
        try:
            await self._end.wait()
        finally:
            self._link.attach(None)
            self.keeper.attach(None)
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
            log.warning("call %s: Twilio stream lost: %s", self.call_sid, exc)
            self.request_end("twilio_stream_lost")
        except RealtimeError as exc:
            self._realtime_failed(f"realtime session lost: {exc}")
        except Exception:
            log.exception("call %s: %s task failed", self.call_sid, name)
            self.request_end("realtime_error" if name == "realtime" else "gateway_error")

    async def _finish(self) -> None:
        reason = self.end_reason or "unknown"
        now = self.clock.now()
        self.turns.close()
        await self.keeper.close()
        transferred = False
        if reason == "transfer" and self.transfer_to and self.transfers is not None:
            try:  # the call leaves the stream for <Dial> of the homeowner; Twilio reports back at the action URL
                await self.transfers.redirect(self.call_sid, self.transfers.dial_twiml(self.ctx, self.transfer_to))
                transferred = True
            except Exception as exc:
                log.warning("call %s: transfer to the homeowner failed (%s); hanging up", self.call_sid, exc)
                self.publish(ev.HomeownerTransfer(
                    event_id=f"transfer-{self.call_sid}", job_id=self.ctx.job_id, provider_id=self.ctx.provider_id,
                    attempt=self.ctx.attempt, call_sid=self.call_sid, outcome="not_reached", dial_status="failed"))
        if reason != "provider_hangup" and not transferred:
            try:
                await self._hangup(self.call_sid)
                self.hangup_at = self.clock.now()
            except Exception as exc:  # closing the stream below ends the call anyway (no verb after <Connect>)
                log.warning("call %s: REST hang-up failed: %s", self.call_sid, exc)
        self.flush_transcript()
        await self._outbox.flush(self.settings.publish_flush_s)
        self._outbox.put(ev.CallEnded(
            **about_call(self.ctx, self.call_sid), event_id=ids.call_ended_event_id(self.call_sid), reason=reason,
            duration_s=round(max(0.0, now - self.started_at), 3), utterances=self.transcript.released_count,
            voicemail_left=self.flow.voicemail_left,
        ))
        await self._outbox.close(self.settings.publish_flush_s)
        code = 1008 if reason == "protocol_error" else 1000
        try:
            await self._link.close(code, reason)
        except Exception:  # already closed by the peer
            log.debug("closing the Twilio stream failed", exc_info=True)
        self._closed.set()
        if self._on_end is not None:
            self._on_end(self)

    async def tick(self, now: float) -> bool:
        """The ticker's work; True once the call is ending."""
        self.release_transcript()
        await self.line_events()
        await self.flow.tick(now)
        if not self.turns.gate.done and not self.keeper.down and not self.phases.automated:
            await self.turns.greeting_tick(now)
        if now - self.started_at >= self.settings.max_call_s:
            self.request_end("max_duration")
            return True
        await self.out.release()
        if (self.phases.silence_expired(now, self.settings.silence_timeout_s) and not self.out.busy
                and not self.keeper.down):
            self.request_end("silence_timeout")
            return True
        return False

    # ------------------------------------------------------------------------------------------------ Twilio side

    async def on_caller_audio(self, ulaw: bytes, payload: str) -> None:
        self._hear_caller(ulaw)
        await self.keeper.audio_in(self._transcoder.to_model(payload))

    def on_caller_audio_now(self, ulaw: bytes, payload: str) -> None:
        """`on_caller_audio` from the socket's read callback; only when `keeper.can_send_now()`."""
        self._hear_caller(ulaw)
        self.keeper.audio_in_now(self._transcoder.to_model(payload))

    def _hear_caller(self, ulaw: bytes) -> None:
        if self.turns.gate.waiting and audioop.rms(audioop.ulaw2lin(ulaw, 2), 2) >= self.settings.greeting_voice_rms:
            self.turns.gate.voice(self.clock.now())  # local energy, so the opening line never starts over a hello
        self.flow.audio(ulaw)

    async def on_mark(self, name: str) -> None:
        echo = self.out.tracker.on_echo(name)
        if echo.kind == EchoKind.AUDIO:
            self.phases.activity(self.clock.now())
            await self.out.release()
        elif echo.kind == EchoKind.MARKER:
            await self.out.release()
            await self.turns.marker_played(echo.label or "")

    def on_audio_mark_now(self, name: str) -> None:
        """`on_mark` for an audio mark (`tracker.audio_mark`), without awaiting; only after `out.can_send_now()`."""
        self.out.tracker.on_echo(name)
        self.phases.activity(self.clock.now())
        self.out.release_now()

    def on_dtmf(self, digit: str) -> None:
        log.info("call %s: DTMF %r received", self.call_sid, digit[:4])

    # ------------------------------------------------------------------------------------------------ session loss

    async def resume(self, cause: RealtimeError) -> bool:
        """The realtime session is gone mid-call. True once a new one carries the conversation on; False when the
        call ends without one (it was ending anyway, or reopening is not allowed or failed: "realtime_error")."""
        self.keeper.lost()
        metrics.REALTIME_ERRORS.labels(kind="session_lost").inc()
        if self._end.is_set():
            return False
        if self.turns.ledger.end_call_requested():
            log.info("call %s: realtime session lost after end_call (%s); hanging up after the goodbye",
                     self.call_sid, cause)
            await self.turns.schedule_hangup()  # no-op if already scheduled; its mark echo (or fallback) ends the call
            return False
        if not self.keeper.may_reopen:
            self._realtime_failed(f"realtime session lost again ({cause}); not reopened")
            return False
        log.warning("call %s: realtime session lost (%s); reopening it with the conversation so far",
                    self.call_sid, cause)
        # The lost session's responses will never finish: send the audio already here, close their transcripts.
        await self.out.abandon()
        self.turns.forget_session(self.keeper.said_anything())
        self.flush_transcript()
        try:
            lines, audio_ms = await self.keeper.reopen(cause)
        except ReopenFailed as exc:
            self._realtime_failed(str(exc))
            return False
        self.phases.activity(self.clock.now())
        log.info("call %s: realtime session reopened; %d line(s) and %d ms of audio replayed", self.call_sid,
                 lines, audio_ms)
        return True

    def _realtime_failed(self, why: str) -> None:
        self.end_detail = why
        self.keeper.drop_backlog()
        log.error("call %s: %s; ending the call", self.call_sid, why)
        self.request_end("realtime_error")

    # ------------------------------------------------------------------------------------------------ transcript

    async def line_events(self) -> None:
        """Hand what was heard and AMD verdicts to the call flow (they may press keys, hold, or end the call)."""
        while self._verdicts:
            await self.flow.machine_verdict(self._verdicts.popleft())
        while self._heard:
            await self.flow.heard(self._heard.popleft())

    def release_transcript(self) -> None:
        for utterance in self.transcript.release(self.clock.now()):
            self._publish_utterance(utterance)

    def flush_transcript(self) -> None:
        for utterance in self.transcript.flush(self.clock.now()):
            self._publish_utterance(utterance)

    def publish(self, event: ev.Event) -> None:
        self._outbox.put(event)

    async def transfer_requested(self) -> dict[str, object]:
        """The agent asked to hand the call to the homeowner: the tool's answer (the transfer itself happens once
        the agent's line has played and the call ends with reason `transfer`)."""
        phone = await self.transfers.homeowner_phone(self.ctx.job_id) if self.transfers is not None else None
        if not phone or self.ctx.transfer_failed:
            self.publish(ev.HomeownerTransfer(
                event_id=f"transfer-{self.call_sid}-unavailable", job_id=self.ctx.job_id,
                provider_id=self.ctx.provider_id, attempt=self.ctx.attempt, call_sid=self.call_sid,
                outcome="unavailable"))
            return {"ok": False, "error": TRANSFER_UNAVAILABLE}
        self.transfer_to = phone
        return {"ok": True}

    def _publish_utterance(self, u: FinalUtterance) -> None:
        self.keeper.remember(u)
        if u.role == ev.Role.USER:
            self._heard.append(u)
        self._outbox.put(ev.UtteranceTranscribed(
            **about_call(self.ctx, self.call_sid),
            event_id=ids.utterance_event_id(self.call_sid, u.item_id, u.revision),
            utterance_id=u.item_id, seq=u.seq, role=u.role,
            text=u.text, spoken_at=u.spoken_at, interrupted=u.interrupted, revision=u.revision,
        ))
