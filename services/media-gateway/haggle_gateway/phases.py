"""Where a call is, as one explicit state: the phase and how long the line has been quiet.

Phases:
- GREETING: nobody has spoken for us yet (the greeting gate decides when we open).
- CONVERSATION: talking with a person.
- MENU: an automated phone menu answers; the agent presses keys (send_dtmf) and never talks over it.
- HOLD: the business put us on hold; the agent is silent, no model audio reaches the line, the silence
  timeout does not apply (the hold timeout does).
- SCREENING: a call-screening assistant asked who is calling; the agent answered once and waits.
- VOICEMAIL: a machine took the call; the agent leaves its one message (or the call ends).

Silence is measured here because what counts as "too quiet" depends on the phase.
"""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class CallPhase(enum.Enum):
    GREETING = "greeting"
    CONVERSATION = "conversation"
    MENU = "menu"
    HOLD = "hold"
    SCREENING = "screening"
    VOICEMAIL = "voicemail"


class PhaseState:
    """The call's phase and the time of the last sign of life on the line (either direction)."""

    def __init__(self, now: float, label: str = "") -> None:
        self.label = label  # the call, for logs
        self.phase = CallPhase.GREETING
        self.entered_at = now
        self.last_activity = now
        self.history: list[CallPhase] = [CallPhase.GREETING]

    def enter(self, phase: CallPhase, now: float) -> bool:
        """Move to `phase`; False if already there."""
        if phase is self.phase:
            return False
        log.info("call %s: phase %s -> %s", self.label, self.phase.value, phase.value)
        self.phase = phase
        self.entered_at = now
        self.last_activity = now
        self.history.append(phase)
        return True

    def activity(self, now: float) -> None:
        self.last_activity = now

    @property
    def silent_agent(self) -> bool:
        """In these phases no model audio may reach the line."""
        return self.phase is CallPhase.HOLD

    @property
    def automated(self) -> bool:
        """A menu, hold or voicemail answers: no opening line for a person yet."""
        return self.phase in (CallPhase.MENU, CallPhase.HOLD, CallPhase.VOICEMAIL)

    def silence_expired(self, now: float, timeout_s: float) -> bool:
        if self.phase in (CallPhase.HOLD, CallPhase.VOICEMAIL):
            return False  # a hold has its own timeout; a voicemail message its own bounded wait
        return now - self.last_activity >= timeout_s

    def hold_expired(self, now: float, timeout_s: float) -> bool:
        return self.phase is CallPhase.HOLD and now - self.entered_at >= timeout_s
