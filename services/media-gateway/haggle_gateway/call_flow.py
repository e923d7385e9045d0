"""The phone line around the conversation: menus, hold, call screening and voicemail.

Owns the line-level state (the menu watch, key presses waiting to be heard, machine evidence, the voicemail
message) and moves the call's `PhaseState`:
- Menus: the model presses keys with `send_dtmf`; the gateway plays the tones in-band (dtmf.py), queued like
  agent audio, and answers the tool once a marker after the tones has echoed, i.e. once they have played
  (docs/twilio-media-streams.md, "DTMF"). A menu heard three times with no progress gets `0` pressed once; if it
  comes back again the call ends with reason `ivr_stuck`.
- Hold: the model says so with the `hold` tool, or the business's words say so. While on hold no model audio
  reaches the line and the silence timeout does not apply; `hold_timeout_s` caps the wait. A person speaking
  (or the model calling `hold` "resumed") ends the hold; the greeting is not repeated.
- Screening: a screening prompt moves the call to SCREENING; the model answers it with one line (the brief says
  how) and the next person's words move it on.
- Voicemail: an AMD verdict is evidence, not a decision (docs/twilio-media-streams.md, "Answering machine
  detection"). `machine_end_beep` or `fax`, a beep heard on the line (beep.py), the model's `voicemail` tool, or
  a suspected machine that does not answer our opening line make it a voicemail: with VOICEMAIL_ACTION=message
  one short message is spoken (not interruptible) and the call hangs up after it has played; otherwise the call
  hangs up at once.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from . import dtmf
from . import realtime_events as rt
from .beep import BeepDetector
from .ledger import ResponseHandle
from .menu import LineKind, MenuAction, MenuWatch, classify
from .phases import CallPhase
from .prompt import voicemail_message
from .transcript import FinalUtterance
from .turns import KEYS_PREFIX

if TYPE_CHECKING:
    from .bridge import CallBridge

log = logging.getLogger(__name__)

MAX_DIGITS = 20
_DIGITS = re.compile(r"^[0-9*#]{1,20}$")
DECISIVE_VERDICTS = frozenset({"machine_end_beep", "fax"})
SUSPECT_VERDICTS = frozenset({"machine_start", "machine_end_other", "machine_end_silence", "unknown"})


class CallFlow:
    TOOLS = frozenset({"send_dtmf", "hold", "voicemail"})

    def __init__(self, call: CallBridge) -> None:
        self._call = call
        self.menu = MenuWatch()
        self.machine_suspected: str | None = None  # the AMD verdict that made us suspicious
        self.voicemail_left = False
        self.voicemail = False
        self.presses = 0
        self._pending_keys: dict[str, tuple[str, str]] = {}  # marker label -> (tool call id, digits)
        self._key_seq = 0
        self._opening_heard_at: float | None = None  # our first line has played out on the line
        self._beep = BeepDetector()
        self._beep_heard = False
        self._replied = False  # the callee answered our opening line: a person, not a recording

    # ------------------------------------------------------------------------------------------------ tools

    async def on_tool(self, name: str, call_id: str, args: dict[str, Any], state: ResponseHandle | None) -> \
            dict[str, Any] | None:
        """The tool's output, or None when it comes later (key presses answer once played)."""
        if state is not None:
            # After keys, "on hold" or a voicemail the model listens; off hold it answers the person.
            state.listen = not (name == "hold" and args.get("state") == "resumed")
        if name == "send_dtmf":
            digits = args.get("digits")
            if not isinstance(digits, str) or not _DIGITS.match(digits):
                return {"ok": False, "error": "digits must be 1 to 20 of 0-9, * and #"}
            await self.press(digits, call_id)
            return None
        if name == "hold":
            if args.get("state") == "resumed":
                await self.hold_ended("the model says a person is back")
            else:
                await self.hold_started("the model says we are on hold")
            return {"ok": True, "state": self._call.phases.phase.value}
        # voicemail
        await self.voicemail_detected("the model's judgment")
        return {"ok": True}

    async def press(self, digits: str, call_id: str = "") -> None:
        self._key_seq += 1
        self.presses += 1
        label = f"keys-{self._key_seq}"
        self._call.phases.enter(CallPhase.MENU, self._call.clock.now())
        log.info("call %s: pressing %d key(s)", self._call.call_sid, len(digits))
        await self._call.out.raw(dtmf.tones(digits), f"{KEYS_PREFIX}{self._key_seq}")
        self._pending_keys[label] = (call_id, digits)
        await self._call.out.marker(label)

    async def marker_played(self, label: str) -> None:
        pending = self._pending_keys.pop(label, None)
        if pending is None:
            return
        call_id, digits = pending
        if call_id:
            await self._call.keeper.send(rt.function_call_output(call_id, {
                "ok": True, "played": digits, "note": "The keys have been pressed; wait for what the line says."}))

    # ------------------------------------------------------------------------------------------------ what we hear

    def audio(self, ulaw: bytes) -> None:
        """The callee's audio: listened to for a voicemail beep until a person has answered our opening line
        (or all along once AMD suspects a machine)."""
        if self.voicemail or (self._replied and not self.machine_suspected):
            return
        if self._beep.feed(ulaw):
            self._beep_heard = True

    async def heard(self, utterance: FinalUtterance) -> None:
        """A finished line from the callee."""
        phases, now = self._call.phases, self._call.clock.now()
        if self._call.turns.first_done_at is not None and utterance.text:
            self._replied = True
        kind = classify(utterance.text)
        if kind is LineKind.MENU:
            phases.enter(CallPhase.MENU, now)
            action = self.menu.heard(utterance.text)
            if action is MenuAction.PRESS_ZERO:
                log.info("call %s: the same menu three times; pressing 0", self._call.call_sid)
                await self.press("0")
            elif action is MenuAction.STUCK:
                log.info("call %s: the menu goes on after 0; giving up", self._call.call_sid)
                self._call.request_end("ivr_stuck")
            return
        self.menu.progress()
        if kind is LineKind.HOLD:
            await self.hold_started("the business put us on hold")
        elif kind is LineKind.SCREENING:
            phases.enter(CallPhase.SCREENING, now)
        elif phases.phase in (CallPhase.MENU, CallPhase.HOLD, CallPhase.SCREENING):
            if phases.phase is CallPhase.HOLD:
                await self.hold_ended("a person speaks")
            else:
                phases.enter(CallPhase.CONVERSATION, now)

    # ------------------------------------------------------------------------------------------------ hold

    async def hold_started(self, why: str) -> None:
        if self._call.phases.enter(CallPhase.HOLD, self._call.clock.now()):
            log.info("call %s: on hold (%s)", self._call.call_sid, why)
            await self._call.turns.silence()

    async def hold_ended(self, why: str) -> None:
        if self._call.phases.phase is CallPhase.HOLD:
            log.info("call %s: hold over (%s)", self._call.call_sid, why)
            self._call.phases.enter(CallPhase.CONVERSATION, self._call.clock.now())
            await self._call.turns.hold_over()

    # ------------------------------------------------------------------------------------------------ voicemail

    async def machine_verdict(self, answered_by: str) -> None:
        if answered_by in DECISIVE_VERDICTS:
            await self.voicemail_detected(f"AMD says {answered_by}")
        elif answered_by in SUSPECT_VERDICTS:
            log.info("call %s: AMD says %s; taken as evidence only", self._call.call_sid, answered_by)
            self.machine_suspected = answered_by

    async def voicemail_detected(self, why: str) -> None:
        if self.voicemail:
            return
        self.voicemail = True
        call, settings = self._call, self._call.settings
        call.phases.enter(CallPhase.VOICEMAIL, call.clock.now())
        log.info("call %s: voicemail (%s); action %s", call.call_sid, why, settings.voicemail_action)
        if settings.voicemail_action != "message":
            call.request_end("voicemail")
            return
        await call.turns.leave_message(voicemail_message(call.brief, settings.callback_number))

    def message_played(self) -> None:
        self.voicemail_left = True

    async def tick(self, now: float) -> None:
        call, settings = self._call, self._call.settings
        if self._opening_heard_at is None and call.turns.first_done_at is not None and not call.out.busy:
            self._opening_heard_at = now
        if self._beep_heard and not self.voicemail:
            await self.voicemail_detected("a beep on the line")
        elif call.phases.hold_expired(now, settings.hold_timeout_s):
            log.info("call %s: on hold for %.0fs; giving up", call.call_sid, settings.hold_timeout_s)
            call.request_end("hold_timeout")
        elif (self.machine_suspected and not self.voicemail and self._opening_heard_at is not None
              and not call.turns.speech_started_after(self._opening_heard_at)
              and now - self._opening_heard_at >= settings.voicemail_reply_wait_s):
            await self.voicemail_detected(f"AMD said {self.machine_suspected} and nobody answered our opening line")
