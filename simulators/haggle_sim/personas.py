"""Scripted provider personas shared by the Twilio and realtime stand-ins.

Why one script for both: the Twilio stand-in plays the provider's side of the phone line (speech-like
audio at the right moments) and the realtime stand-in plays the voice model (it "hears" that audio
through its own energy VAD and "transcribes" it with the provider's next scripted line, and it speaks
the agent's scripted lines). Both read the same `Persona`, so a conversation stays aligned without the
stand-ins talking to each other: they only meet through the real system under test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Answer = Literal["human", "busy", "no-answer", "voicemail", "failed", "invalid-number"]


@dataclass(frozen=True)
class ToolCall:
    """A function call the simulated model makes at the end of an agent turn (after its audio)."""

    name: str  # "record_quote" | "end_call"
    arguments: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    """One utterance. `speaker` "provider" is played by the Twilio stand-in, "agent" by the realtime stand-in.

    For the agent, `{business}` in `text` is replaced by the business name the session's instructions give.
    `barge_in_after_ms` (provider turns only): start talking this long after the agent's previous turn began
    playing, instead of waiting for it to finish (an interruption).
    """

    speaker: Literal["provider", "agent"]
    text: str
    tools: tuple[ToolCall, ...] = ()
    barge_in_after_ms: int | None = None


@dataclass(frozen=True)
class Persona:
    """A simulated provider: how the phone is answered and what is said.

    `ms_per_char` sets how long speech lasts (tests use small values to stay fast).
    `hangup_after_turn`: the provider hangs up right after speaking turn index N (a provider hang-up).
    `callbacks`: the scripts of later calls to this number (the 2nd call plays `callbacks[0]`, ...), so a
    market callback can go differently from the first call; without one, every call plays `turns`.
    """

    business: str
    phone: str
    answer: Answer = "human"
    turns: tuple[Turn, ...] = ()
    ms_per_char: int = 25
    hangup_after_turn: int | None = None
    ring_ms: int = 200
    callbacks: tuple[tuple[Turn, ...], ...] = ()

    def for_call(self, number: int) -> Persona:
        """This persona as it plays its `number`-th call (1-based)."""
        if number < 2 or number - 2 >= len(self.callbacks):
            return self
        return dataclasses.replace(self, turns=self.callbacks[number - 2], callbacks=())

    def provider_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.speaker == "provider"]

    def agent_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.speaker == "agent"]

    def speech_ms(self, text: str) -> int:
        return max(200, len(text) * self.ms_per_char)


class PersonaBook:
    """The personas of one simulated world, looked up by phone number (Twilio side) or business name (model side)."""

    def __init__(self, personas: list[Persona] | None = None) -> None:
        self._by_phone: dict[str, Persona] = {}
        self._calls: dict[str, int] = {}  # calls placed to each number so far
        for p in personas or []:
            self.add(p)

    def add(self, persona: Persona) -> None:
        self._by_phone[persona.phone] = persona

    def by_phone(self, phone: str) -> Persona | None:
        return self._by_phone.get(phone)

    def dialed(self, phone: str) -> Persona | None:
        """A call is placed to `phone` (the Twilio side): the persona as it plays this call."""
        persona = self._by_phone.get(phone)
        if persona is None:
            return None
        self._calls[phone] = self._calls.get(phone, 0) + 1
        return persona.for_call(self._calls[phone])

    def by_instructions(self, instructions: str) -> Persona | None:
        """The persona whose business name the session instructions mention (longest name wins), as it plays
        its latest call: the realtime session of a call opens after the call was placed, and one provider's calls
        never overlap."""
        hits = [p for p in self._by_phone.values() if p.business.lower() in instructions.lower()]
        if not hits:
            return None
        persona = max(hits, key=lambda p: len(p.business))
        return persona.for_call(self._calls.get(persona.phone, 1))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_phone.values())


def negotiation(
    business: str,
    phone: str,
    *,
    first_quote: int,
    counter: int,
    final: int,
    ms_per_char: int = 25,
) -> Persona:
    """The common happy path: hello, quote, agent counters, provider meets in the middle, agent accepts."""
    words = {100: "a hundred", 125: "a hundred twenty five", 150: "one fifty", 175: "one seventy five",
             180: "one eighty", 200: "two hundred", 225: "two twenty five", 250: "two fifty", 300: "three hundred"}

    def say(n: int) -> str:
        return words.get(n, f"{n} dollars")

    return Persona(
        business=business,
        phone=phone,
        ms_per_char=ms_per_char,
        turns=(
            Turn("provider", "Hello?"),
            Turn("agent", "Hi, is this {business}?"),
            Turn("provider", f"Yes, this is {business}. How can I help you?"),
            Turn("agent", "I have a leaking kitchen faucet and I'm looking for an estimate to fix it."),
            Turn("provider", f"For a faucet repair we usually charge {say(first_quote)}."),
            Turn("agent", f"Could you do it for ${counter}?",
                 tools=(ToolCall("record_quote", {"price": first_quote, "price_type": "flat", "conditions": ""}),)),
            Turn("provider", f"I could do it for {say(final)}, that's my best price."),
            Turn("agent", f"Great, ${final} works for us. Thank you, goodbye!",
                 tools=(ToolCall("record_quote", {"price": final, "price_type": "flat", "conditions": "",
                                                  "agreed": True}),
                        ToolCall("end_call", {"reason": "agreed"}))),
        ),
    )


def demo_personas(ms_per_char: int = 25) -> PersonaBook:
    """Three providers for `make demo`: two deals at different prices and one that will not go low enough."""
    refuse = Persona(
        business="Drip Masters",
        phone="+14155550103",
        ms_per_char=ms_per_char,
        turns=(
            Turn("provider", "Drip Masters, hello?"),
            Turn("agent", "Hi, is this {business}?"),
            Turn("provider", "Yes it is."),
            Turn("agent", "I have a leaking kitchen faucet and I'm looking for an estimate to fix it."),
            Turn("provider", "That's three hundred dollars, plus parts."),
            Turn("agent", "Could you do it for $180?",
                 tools=(ToolCall("record_quote", {"price": 300, "price_type": "flat", "conditions": "plus parts"}),)),
            Turn("provider", "Sorry, I can't go that low."),
            Turn("agent", "I understand. Thanks for your time, goodbye!",
                 tools=(ToolCall("end_call", {"reason": "no agreement"}),)),
        ),
    )
    return PersonaBook([
        negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175, ms_per_char=ms_per_char),
        negotiation("Bay Pipe Pros", "+14155550102", first_quote=250, counter=150, final=180, ms_per_char=ms_per_char),
        refuse,
    ])
