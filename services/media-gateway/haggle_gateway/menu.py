"""What the callee's words say about the line: a phone menu, a hold, a call-screening prompt, or a person.

Pure text rules over the callee's finished utterances (the transcript the model also hears). They decide the
call phase the gateway tracks and the one thing the gateway does on its own in a menu: a menu heard three times
with no progress gets `0` pressed once; if the same menu comes back after that, the call is stuck (`ivr_stuck`).
"Same menu" is judged by word overlap, since transcription of a recorded prompt varies a little each time.
"""

from __future__ import annotations

import enum
import re

_WORD = re.compile(r"[a-z0-9']+")
_MENU = re.compile(r"\b(press|dial|push)\s+(\d|one|two|three|four|five|six|seven|eight|nine|zero|star|pound)\b"
                   r"|\bfor\s+[a-z ]{2,40},?\s+(press|dial)\b|\bmain menu\b|\bmenu options\b")
_HOLD = re.compile(r"\b(please\s+hold|hold\s+(on|please)|put\s+you\s+on\s+hold|placed?\s+on\s+hold|"
                   r"your call is important|remain on the line|stay on the line|next available)\b")
_SCREENING = re.compile(r"\b(state\s+your\s+name|say\s+your\s+name|who(?:'s| is)\s+calling|reason\s+for\s+(your|the)\s+"
                        r"call|screening|record\s+your\s+name)\b")
SAME_MENU = 0.7  # word-set overlap (Jaccard) above which two prompts are one menu
STUCK_AFTER = 3  # times a menu is heard before 0 is pressed


class LineKind(enum.Enum):
    PERSON = "person"
    MENU = "menu"
    HOLD = "hold"
    SCREENING = "screening"


class MenuAction(enum.Enum):
    PRESS_ZERO = "press_zero"
    STUCK = "stuck"


def classify(text: str) -> LineKind:
    lowered = text.lower()
    if _MENU.search(lowered):
        return LineKind.MENU
    if _SCREENING.search(lowered):
        return LineKind.SCREENING
    if _HOLD.search(lowered):
        return LineKind.HOLD
    return LineKind.PERSON


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


class MenuWatch:
    """Counts repeats of a menu prompt; progress (a different menu, or a person) resets the count."""

    def __init__(self, stuck_after: int = STUCK_AFTER) -> None:
        self.stuck_after = stuck_after
        self.pressed_zero = False
        self._menu: frozenset[str] | None = None
        self._count = 0

    def heard(self, text: str) -> MenuAction | None:
        words = _words(text)
        if self._menu is not None and _overlap(words, self._menu) >= SAME_MENU:
            self._count += 1
        else:
            self._menu, self._count = words, 1
            return None
        if self.pressed_zero:
            return MenuAction.STUCK
        if self._count >= self.stuck_after:
            self.pressed_zero = True
            return MenuAction.PRESS_ZERO
        return None

    def progress(self) -> None:
        """A person, or anything that is not this menu: the menu did move on."""
        self._menu, self._count = None, 0
