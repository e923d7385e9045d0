"""When to open the call: never over the callee's "Hello?".

Pure: the bridge feeds it voice and speech events with the time and asks `tick(now)` what to do. If the callee
speaks, the model's server VAD answers when they stop (that answer is the greeting: `response_created`); if
they stay silent for `wait_s`, or finished speaking and the server did not answer within `auto_grace_s`, it
says GREET. If our greeting draws no response within `fallback_s`, it says NUDGE once (a `response.create`).
"""

from __future__ import annotations

import enum


class GreetAction(enum.Enum):
    GREET = "greet"
    NUDGE = "nudge"


class GreetingGate:
    def __init__(self, started_at: float, *, wait_s: float, auto_grace_s: float, fallback_s: float = 2.0) -> None:
        self.wait_s = wait_s
        self.auto_grace_s = auto_grace_s
        self.fallback_s = fallback_s
        self.state = "waiting"  # waiting -> sent -> done
        self.kind = ""  # "auto" (the model answered the hello) | "sent" (our timer) | ""
        self.greeted_at: float | None = None
        self._started_at = started_at
        self._speaking = False
        self._last_voice_at = started_at
        self._auto_deadline: float | None = None
        self._sent_at: float | None = None
        self._nudged = False

    @property
    def waiting(self) -> bool:
        return self.state == "waiting"

    @property
    def done(self) -> bool:
        return self.state == "done"

    def voice(self, now: float) -> None:
        """Local energy on the line: someone is talking (before the server's VAD says so)."""
        self._last_voice_at = now

    def speech_started(self, now: float) -> None:
        self._speaking = True
        self._last_voice_at = now
        self._auto_deadline = None

    def speech_stopped(self, now: float) -> None:
        self._speaking = False
        self._last_voice_at = now
        if self.state == "waiting":
            self._auto_deadline = now + self.auto_grace_s

    def response_created(self, now: float) -> None:
        if self.state == "done":
            return
        if self.state == "waiting":
            self.kind = "auto"
        self.greeted_at = now
        self.state = "done"

    def sent(self, now: float) -> None:
        self.state = "sent"
        self.kind = "sent"
        self._sent_at = now

    def restart(self, now: float) -> None:
        """A fresh session that has said nothing yet: the gate starts over."""
        self.state = "waiting"
        self._nudged = False
        self._auto_deadline = None
        self._speaking = False

    def tick(self, now: float) -> GreetAction | None:
        if self.state == "done":
            return None
        if self.state == "sent":
            if not self._nudged and self._sent_at is not None and now - self._sent_at >= self.fallback_s:
                self._nudged = True
                return GreetAction.NUDGE
            return None
        if self._speaking:
            return None  # never talk over the callee
        if self._auto_deadline is not None:
            return GreetAction.GREET if now >= self._auto_deadline else None
        if now - max(self._started_at, self._last_voice_at) >= self.wait_s:
            return GreetAction.GREET
        return None
