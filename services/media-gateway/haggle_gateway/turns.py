"""The model's side of the conversation: responses, barge-in, tools, the greeting and the goodbye.

Owns the `GreetingGate` and the `ResponseLedger`; reads and writes the line through the bridge's `AudioOut`,
the model through its `SessionKeeper`, and the transcript through its assembler.
"""

from __future__ import annotations

import binascii
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from haggle_contracts import events as ev

from haggle import metrics

from . import realtime_events as rt
from .greeting import GreetAction, GreetingGate
from .ledger import ResponseLedger
from .links import Clock, Timer
from .phases import CallPhase
from .prompt import greeting_line
from .settings import GatewaySettings
from .tools import booking_event
from .transfer import FALLBACK_LINE as TRANSFER_FALLBACK_LINE
from .transfer import TOOL as TRANSFER_TOOL

if TYPE_CHECKING:
    from .bridge import CallBridge

log = logging.getLogger(__name__)

GREETING_RESPONSE_FALLBACK_S = 2.0
MESSAGE_WAIT_S = 30.0  # a voicemail message is spoken and played within this (they are about 10 s)
MAX_HELD_BACK = 1500  # audio deltas kept back on hold (tens of seconds at the usual delta sizes)
KEYS_PREFIX = "dtmf-"  # item ids of our own key tones (call_flow.py): never truncated or cut by speech


def _wall() -> datetime:
    return datetime.now(UTC)


class ModelTurns:
    def __init__(self, call: CallBridge, settings: GatewaySettings, clock: Clock) -> None:
        self._call = call
        self._settings = settings
        self._clock = clock
        self.gate = GreetingGate(call.started_at, wait_s=settings.greeting_wait_s,
                                 auto_grace_s=settings.greeting_auto_grace_s, fallback_s=GREETING_RESPONSE_FALLBACK_S)
        self.ledger = ResponseLedger()
        self.first_audio_at: float | None = None
        self.truncates = 0
        self.dropped_deltas = 0
        self.speech_started: list[float] = []
        self.goodbye_reason = "end_call"  # what the goodbye's echo ends the call with ("voicemail" for a message)
        self.first_done_at: float | None = None  # our first response (the opening line) finished streaming
        self._bye_timer: Timer | None = None
        self._speech_stopped_at: float | None = None
        # On hold, the audio of the response to the latest line is kept back: if that line turns out to be a
        # person taking us off hold, it is the answer and plays; otherwise it is dropped (never reaches the line).
        self._held_back: list[rt.AudioDelta] = []

    async def greeting_tick(self, now: float) -> None:
        if self._call.ctx.transfer_failed:
            # Back from a transfer the homeowner did not take: one polite closing line, then hang up.
            if self.gate.state != "waiting":
                return
            self.gate.sent(now)
            self.ledger.expect_forced(False, end_call=True)
            await self._call.keeper.send(rt.force_message(TRANSFER_FALLBACK_LINE, interruptible=False))
            return
        action = self.gate.tick(now)
        if action is GreetAction.GREET:
            await self._send_greeting(now)
        elif action is GreetAction.NUDGE:
            log.warning("call %s: no response to the greeting; sending response.create", self._call.call_sid)
            await self._call.keeper.send(rt.response_create())

    def speech_started_after(self, when: float) -> bool:
        return bool(self.speech_started) and self.speech_started[-1] >= when

    async def marker_played(self, label: str) -> None:
        if label != "bye":
            await self._call.flow.marker_played(label)
        elif self.ledger.goodbye_pending:
            log.info("call %s: goodbye played; hanging up", self._call.call_sid)
            if self.goodbye_reason == "voicemail":
                self._call.flow.message_played()
            self._call.request_end(self.goodbye_reason)

    async def hold_over(self) -> None:
        """Off hold: the answer to the line that ended it (kept back while still on hold) plays now."""
        held, self._held_back = self._held_back, []
        for event in held:
            await self.on_audio_delta(event)
        for event in held[-1:]:
            owner = self.ledger.get(event.response_id)
            if owner is not None and owner.done:
                await self._call.out.end_of_item(event.item_id)

    async def silence(self) -> None:
        """Stop talking now (on hold): drop what is queued and cancel the response being generated."""
        cut = self.ledger.barge_in(self._call.out.playing_items())
        if cut is not None:
            await self._call.out.clear(self._clock.now())
            self.ledger.drop(cut)
            if cut.cancel_active:
                await self._call.keeper.send(rt.response_cancel())

    async def leave_message(self, text: str) -> None:
        """The voicemail message, verbatim and not interruptible; the call ends once it has played."""
        await self.silence()
        self.goodbye_reason = "voicemail"
        self.ledger.expect_forced(False, end_call=True)
        await self._call.keeper.send(rt.force_message(text, interruptible=False))
        # If the message never comes back as a response, the call still ends (as a voicemail, none left).
        self._bye_timer = self._clock.call_later(MESSAGE_WAIT_S + self._settings.hangup_fallback_s,
                                                 self._bye_timeout)

    def close(self) -> None:
        if self._bye_timer is not None:
            self._bye_timer.cancel()
            self._bye_timer = None

    def forget_session(self, said_anything: bool) -> None:
        """The session is gone: its responses never finish; with nothing said yet, the greeting starts over."""
        self.ledger.forget_session()
        self._speech_stopped_at = None
        if not said_anything:
            self.gate.restart(self._clock.now())

    def on_response_created(self, event: rt.ResponseCreated) -> None:
        now = self._clock.now()
        self.ledger.created(event.response.id, session=self._call.keeper.number, now=now)
        if not self.gate.done:
            self.gate.response_created(now)
            if self._call.phases.phase is CallPhase.GREETING:
                self._call.phases.enter(CallPhase.CONVERSATION, now)

    def on_output_item(self, event: rt.OutputItemAdded) -> None:
        if event.item.type != "message" or not event.item.id:
            return
        state = self.ledger.add_item(event.response_id, event.item.id, session=self._call.keeper.number,
                                     now=self._clock.now())
        if not state.dropped:
            self._call.transcript.open(event.item.id, ev.Role.ASSISTANT, self._clock.now(), _wall())

    def open_user_item(self, item_id: str) -> None:
        self._call.transcript.open(item_id, ev.Role.USER, self._clock.now(), _wall())

    def assistant_delta(self, item_id: str, delta: str) -> None:
        self._call.transcript.assistant_delta(item_id, delta, self._clock.now(), _wall())

    def assistant_done(self, item_id: str, text: str | None) -> None:
        self._call.transcript.assistant_done(item_id, text, self._clock.now(), _wall())

    def on_input_transcript(self, event: rt.InputTranscription) -> None:
        self._call.transcript.user_snapshot(event.item_id, event.transcript, event.is_final, self._clock.now(), _wall())

    async def on_audio_delta(self, event: rt.AudioDelta) -> None:
        audio = self._take_delta(event)
        if audio is not None:
            await self._call.out.audio(event.item_id, audio)

    def on_audio_delta_now(self, event: rt.AudioDelta) -> None:
        """`on_audio_delta` without awaiting; only after `out.can_send_now()`."""
        audio = self._take_delta(event)
        if audio is not None:
            self._call.out.audio_now(event.item_id, audio)

    def _take_delta(self, event: rt.AudioDelta) -> bytes | None:
        """The delta's audio if it is to be played now; None if it was dropped or held back."""
        state = self.ledger.for_audio(event.response_id, event.item_id)
        after_goodbye = self.ledger.goodbye_pending and (state is None or not state.end_call)
        if (state is not None and state.dropped) or after_goodbye:
            self.dropped_deltas += 1  # cut by a barge-in, or said after the goodbye (the call is hanging up)
            return None
        if self._call.phases.silent_agent:
            self.dropped_deltas += 1  # on hold: nothing reaches the line (see `hold_over`)
            if len(self._held_back) < MAX_HELD_BACK:
                self._held_back.append(event)
            return None
        try:
            audio = binascii.a2b_base64(event.delta)  # as base64.b64decode, one call less
        except (binascii.Error, ValueError):
            log.warning("call %s: undecodable audio delta dropped", self._call.call_sid)
            return None
        if state is not None:
            state.had_audio = True
        return audio

    async def on_audio_done(self, response_id: str, item_id: str) -> None:
        state = self.ledger.get(response_id)
        if state is None or not state.dropped:
            await self._call.out.end_of_item(item_id)

    def audio_sent(self, item_id: str) -> None:
        now = self._clock.now()
        self._call.phases.activity(now)
        if self.first_audio_at is None:
            self.first_audio_at = now
            metrics.ANSWER_TO_FIRST_AUDIO.observe(now - self._call.started_at)
        if self._speech_stopped_at is not None:
            state = self.ledger.owner(item_id)
            if state is not None and state.created_at >= self._speech_stopped_at:
                metrics.TURN_LATENCY.observe(now - self._speech_stopped_at)
                self._speech_stopped_at = None

    async def on_speech_started(self, event: rt.SpeechStarted) -> None:
        now = self._clock.now()
        self.speech_started.append(now)
        self._held_back.clear()  # a new line: what answered the previous one is stale
        self._call.phases.activity(now)
        self.gate.speech_started(now)
        self._speech_stopped_at = None  # their turn is not over yet
        if event.item_id:
            self._call.transcript.open(event.item_id, ev.Role.USER, now, _wall())
        items = self._call.out.playing_items()
        if any(i.startswith(KEYS_PREFIX) for i in items):
            log.info("call %s: callee spoke while our keys play; they are not cut", self._call.call_sid)
            return
        cut = self.ledger.barge_in(items)
        if cut is None:
            return
        if cut.protected:
            log.info("call %s: callee spoke over a non-interruptible line", self._call.call_sid)
            return
        # The callee is talking over us: stop the audio at Twilio first, everything else after.
        cuts = await self._call.out.clear(now)
        self.ledger.drop(cut)
        if cut.cancel_active:
            await self._call.keeper.send(rt.response_cancel())  # Grok auto-cancels; "no active response" is benign
        for truncation in cuts:
            self._call.transcript.mark_interrupted(truncation.item_id)
            owner = self.ledger.owner(truncation.item_id)
            if self._settings.truncate_on_barge_in and (owner is None or owner.session == self._call.keeper.number):
                await self._call.keeper.send(rt.item_truncate(truncation.item_id, truncation.content_index,
                                                        truncation.audio_end_ms))
                self.truncates += 1
        if self.ledger.cancel_goodbye():
            log.info("call %s: callee spoke over the goodbye; hang-up postponed", self._call.call_sid)
            if self._bye_timer is not None:
                self._bye_timer.cancel()
                self._bye_timer = None

    def on_speech_stopped(self) -> None:
        now = self._clock.now()
        self._call.phases.activity(now)
        self.gate.speech_stopped(now)
        self._speech_stopped_at = now

    async def on_tool_call(self, event: rt.FunctionCallDone) -> None:
        first, state = self.ledger.for_tool_call(event.call_id, event.response_id, session=self._call.keeper.number,
                                                 now=self._clock.now())
        if not first:
            return  # Grok may repeat a function call item
        args = event.parsed_arguments()
        output: dict[str, Any]
        if event.name == "record_quote":
            events, output = self._call.negotiation.on_quote(event.call_id, args)
            for recorded in events:
                self._call.publish(recorded)
        elif event.name == "record_booking" and self._call.ctx.booking is not None:
            self._call.publish(booking_event(self._call.ctx, self._call.call_sid, event.call_id, args))
            output = {"ok": True}
        elif event.name in self._call.flow.TOOLS:
            result = await self._call.flow.on_tool(event.name, event.call_id, args, state)
            if result is None:
                return  # answered later (key presses: once they have played)
            output = result
        elif event.name == TRANSFER_TOOL:
            output = await self._call.transfer_requested()
            if output.get("ok"):
                # Like end_call: once the line announcing the transfer has played, the call leaves the stream.
                self.goodbye_reason = "transfer"
                if state is None or state.done:
                    await self.schedule_hangup()
                else:
                    state.end_call = True
        elif event.name == "end_call":
            output = {"ok": True}
            if state is None or state.done:
                await self.schedule_hangup()
            else:
                state.end_call = True
        else:
            output = {"ok": False, "error": f"unknown tool {event.name[:40]!r}"}
        await self._call.keeper.send(rt.function_call_output(event.call_id, output))

    async def on_response_done(self, event: rt.ResponseDone) -> None:
        state = self.ledger.finished(event.response.id, session=self._call.keeper.number, now=self._clock.now())
        if not state.dropped and self._call.out.item in state.items:
            await self._call.out.end_of_item(self._call.out.item or "")
        now, wall = self._clock.now(), _wall()
        texts = event.transcripts()
        for item_id in state.items:
            self._call.transcript.assistant_done(item_id, texts.get(item_id), now, wall)
        if self.first_done_at is None and state.had_audio:
            self.first_done_at = now
        if state.dropped:
            return
        if state.end_call:
            await self.schedule_hangup()
        elif (state.tool_calls and not state.had_audio and not state.listen
              and event.response.status in (None, "completed")):
            await self._call.keeper.send(rt.response_create())  # a silent tool turn: let the model continue

    async def schedule_hangup(self) -> None:
        """After the goodbye's audio is all sent: a marker whose echo means it has played."""
        if self.ledger.goodbye_pending:
            return
        self.ledger.goodbye_pending = True
        await self._call.out.marker("bye")
        # The fallback counts from when the goodbye should have played out: audio may still be held here.
        pending_s = self._call.out.pending_ms / 1000
        if self._bye_timer is not None:
            self._bye_timer.cancel()
        self._bye_timer = self._clock.call_later(self._settings.hangup_fallback_s + pending_s, self._bye_timeout)

    def _bye_timeout(self) -> None:
        log.warning("call %s: goodbye mark not echoed in %.0fs; hanging up anyway", self._call.call_sid,
                    self._settings.hangup_fallback_s)
        self._call.request_end(self.goodbye_reason)

    async def _send_greeting(self, now: float) -> None:
        self.gate.sent(now)
        if self._settings.greeting_mode == "force_message":
            # A disclosure or a recording notice must be heard whole: the callee cannot talk over it.
            interruptible = self._settings.ai_disclosure != "upfront" and not self._settings.opening_notice
            self.ledger.expect_forced(interruptible)
            line = greeting_line(self._call.brief, self._settings.ai_disclosure, self._settings.opening_notice)
            await self._call.keeper.send(rt.force_message(line, interruptible=interruptible))
        else:
            await self._call.keeper.send(rt.response_create())

