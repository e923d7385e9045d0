"""Scripted provider personas shared by the Twilio and realtime stand-ins.

Why one script for both: the Twilio stand-in plays the provider's side of the phone line (speech-like
audio at the right moments) and the realtime stand-in plays the voice model (it "hears" that audio
through its own energy VAD and "transcribes" it with the provider's next scripted line, and it speaks
the agent's scripted lines). Both read the same `Persona`, so a conversation stays aligned without the
stand-ins talking to each other: they only meet through the real system under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Answer = Literal["human", "busy", "no-answer", "voicemail", "failed", "invalid-number"]
Sound = Literal["speech", "music", "beep", "silence"]


@dataclass(frozen=True)
class ToolCall:
    """A function call the simulated model makes at the end of an agent turn (after its audio)."""

    name: str  # "record_quote" | "end_call" | "send_dtmf"
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
    # Provider turns only, all optional (the defaults are a spoken line):
    sound: Sound = "speech"  # what the line is: speech, hold music, a voicemail beep, or silence
    ms: int | None = None  # exact length (else `Persona.speech_ms(text)`)
    menu: str = ""  # a phone menu: the keys that lead on; the line repeats until one of them is pressed
    heard_as: str | None = None  # the model's first transcript of this line, revised later to `text`
    pause_before_ms: int | None = None  # silence before this line when it follows a provider line (else pause_ms)

    @property
    def silent(self) -> bool:
        """An agent turn that makes no sound of its own (nothing said; a `send_dtmf` plays tones, not speech)."""
        return self.speaker == "agent" and not self.text


@dataclass(frozen=True)
class Persona:
    """A simulated provider: how the phone is answered and what is said.

    `ms_per_char` sets how long speech lasts (tests use small values to stay fast).
    `hangup_after_turn`: the provider hangs up right after speaking turn index N (a provider hang-up).
    `callbacks`: the scripts of later calls to this number (the 2nd call plays `callbacks[0]`, ...), so a
    market callback can go differently from the first call; without one, every call plays `turns`.
    `pause_ms`: silence between two provider lines that follow each other (no agent line between): longer
    than a server VAD's end-of-speech silence, so each line is its own user turn.
    Answering-machine detection hears the first provider line (twilio_standin.amd_verdict): a person with a long
    greeting is classed as a machine, as on a real line.
    `menu_timeout_ms`, `menu_max_plays`: a phone menu replays after that long without a valid key, and the
    line hangs up after playing it that many times.
    `record_max_ms`: a voicemail stops recording (and hangs up) that long after its beep.
    """

    business: str
    phone: str
    answer: Answer = "human"
    turns: tuple[Turn, ...] = ()
    ms_per_char: int = 25
    hangup_after_turn: int | None = None
    ring_ms: int = 200
    pause_ms: int = 900
    menu_timeout_ms: int = 5000
    menu_max_plays: int = 3
    record_max_ms: int = 60000
    callbacks: tuple[tuple[Turn, ...], ...] = ()

    def for_call(self, number: int) -> Persona:
        """This persona as it plays its `number`-th call (1-based)."""
        if number < 2 or number - 2 >= len(self.callbacks):
            return self
        return replace(self, turns=self.callbacks[number - 2], callbacks=())

    def provider_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.speaker == "provider"]

    def agent_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.speaker == "agent"]

    def speech_ms(self, text: str) -> int:
        return max(200, len(text) * self.ms_per_char)

    def pause_before(self, turn: Turn) -> int:
        """Silence before a provider line that directly follows another provider line."""
        return turn.pause_before_ms if turn.pause_before_ms is not None else self.pause_ms

    def turn_ms(self, turn: Turn) -> int:
        """How long a provider line lasts."""
        return turn.ms if turn.ms is not None else self.speech_ms(turn.text)


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


SPOKEN = {100: "a hundred", 125: "a hundred twenty five", 150: "one fifty", 165: "one sixty five",
          170: "one seventy", 175: "one seventy five", 180: "one eighty", 200: "two hundred",
          225: "two twenty five", 250: "two fifty", 300: "three hundred"}


def say(n: int) -> str:
    """A price the way a person says it on the phone."""
    return SPOKEN.get(n, f"{n} dollars")


def quote(price: int, **extra: object) -> ToolCall:
    """A `record_quote` call for a flat price (plus scope fields, `final`, `agreed`)."""
    return ToolCall("record_quote", {"price": price, "price_type": "flat", "conditions": "", **extra})


def follow_policy(business: str, phone: str, *, first_quote: int, final: int, ms_per_char: int = 25,
                  **scope: object) -> Persona:
    """A first call where the agent follows the offer policy: it records each price the business states and says
    the move it gets back (`{say}`). The business quotes `first_quote`, then answers any counter with `final` as
    its best price, so the move voiced after that is the policy's (accept within the maximum)."""
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
            Turn("agent", "", tools=(quote(first_quote, **scope),)),
            Turn("agent", "{say}"),
            Turn("provider", f"I could do it for {say(final)}, that's my best price."),
            Turn("agent", "", tools=(quote(final, final=True, **scope),)),
            Turn("agent", "{say} Thank you, goodbye!",
                 tools=(quote(final, agreed=True, **scope), ToolCall("end_call", {"reason": "agreed"}))),
        ),
    )


def callback(*, standing: int, answer: int | None) -> tuple[Turn, ...]:
    """The script of a market callback (round 2). The agent opens with the follow-up line; the business restates
    its `standing` price; the agent says the policy's move (which carries the best real quote); the business beats
    it with `answer`, or (None) keeps its price; the agent says the final move and closes."""
    last = standing if answer is None else answer
    reply = (f"Sorry, {say(standing)} is really the lowest I can go." if answer is None
             else f"Alright, I can do it for {say(answer)}.")
    return (
        Turn("provider", "Hello?"),
        Turn("agent", "Hi, is this {business}? It's about the leaking kitchen faucet I called about earlier."),
        Turn("provider", f"Oh yes, hi. We said {say(standing)} for that one."),
        Turn("agent", "", tools=(quote(standing),)),
        Turn("agent", "{say}"),
        Turn("provider", reply),
        Turn("agent", "", tools=(quote(last, final=answer is None),)),
        Turn("agent", "{say} Thank you, goodbye!",
             tools=(quote(last, agreed=True), ToolCall("end_call", {"reason": "callback done"}))),
    )


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


RECEPTIONIST_GREETING = "Thanks for calling {business}, this is Mike, how can I help you?"
MENU_PROMPT = ("Thanks for calling {business}. For service or estimates, press 1. For billing, press 2. "
               "For our hours, press 3.")
HOLD_PROMPT = "Thanks for calling {business}. All of our technicians are busy right now, please hold."
SCREENING_PROMPT = ("Hi, the person you're calling is using a screening service and will get a copy of this "
                    "conversation. Go ahead and state your name and the reason for your call.")
VOICEMAIL_PROMPT = ("Hi, you've reached {business}. We can't come to the phone right now. Please leave your name, "
                    "number and a short message after the tone.")
VOICEMAIL_MESSAGE = ("Hi, this is an AI assistant calling for a homeowner about a leaking kitchen faucet. "
                     "Please call back at the number on your caller ID. Thank you!")


def receptionist(business: str, phone: str, *, first_quote: int, counter: int, final: int,
                 greeting_ms: int = 5000, ms_per_char: int = 25) -> Persona:
    """A person who answers with a long greeting (4-8 s on a real line): Twilio's AMD calls it a machine."""
    base = negotiation(business, phone, first_quote=first_quote, counter=counter, final=final,
                       ms_per_char=ms_per_char)
    greeting = Turn("provider", RECEPTIONIST_GREETING.format(business=business), ms=greeting_ms)
    return replace(base, turns=(greeting, *base.turns[1:]))


def phone_menu(business: str, phone: str, *, first_quote: int, counter: int, final: int, key: str = "1",
               ms_per_char: int = 25, menu_timeout_ms: int = 5000, operator: bool = True) -> Persona:
    """A business behind a phone menu: `key` (or 0 with `operator`) reaches a person, anything else replays it.

    With `operator=False` and a `key` the agent never presses, the menu only replays and then hangs up: a menu
    the agent cannot get through."""
    base = negotiation(business, phone, first_quote=first_quote, counter=counter, final=final,
                       ms_per_char=ms_per_char)
    turns = (
        Turn("provider", MENU_PROMPT.format(business=business), menu=key + ("0" if operator else "")),
        Turn("agent", "", tools=(ToolCall("send_dtmf", {"digits": key}),)),
        Turn("provider", "Service desk, this is Sam. Hello?"),
        *base.turns[1:],
    )
    return replace(base, turns=turns, menu_timeout_ms=menu_timeout_ms)


def on_hold(business: str, phone: str, *, first_quote: int, counter: int, final: int, hold_ms: int = 6000,
            ms_per_char: int = 25) -> Persona:
    """"Please hold", hold music (`hold_ms`), then a person picks up."""
    base = negotiation(business, phone, first_quote=first_quote, counter=counter, final=final,
                       ms_per_char=ms_per_char)
    turns = (
        Turn("provider", HOLD_PROMPT.format(business=business)),
        Turn("agent", ""),  # the agent waits quietly
        Turn("provider", "", sound="music", ms=hold_ms),
        Turn("provider", "Thanks for holding, this is Dana. Hello?"),
        *base.turns[1:],
    )
    return replace(base, turns=turns)


def screened(business: str, phone: str, *, first_quote: int, counter: int, final: int,
             ms_per_char: int = 25) -> Persona:
    """A call screening prompt; the person picks up once the agent has said who it is and why it calls."""
    base = negotiation(business, phone, first_quote=first_quote, counter=counter, final=final,
                       ms_per_char=ms_per_char)
    turns = (
        Turn("provider", SCREENING_PROMPT),
        Turn("agent", "Hi, I'm an AI assistant calling for a homeowner about a leaking kitchen faucet."),
        Turn("provider", f"Hi, this is {business}, sorry about that. How can I help you?"),
        *base.turns[3:],
    )
    return replace(base, turns=turns)


def voicemail(business: str, phone: str, *, greeting_ms: int = 4000, beep_ms: int = 500,
              ms_per_char: int = 25, record_max_ms: int = 60000) -> Persona:
    """A real voicemail: greeting, a beep (a 1 kHz tone in the audio), then silence while it records."""
    return Persona(
        business=business,
        phone=phone,
        answer="voicemail",
        ms_per_char=ms_per_char,
        record_max_ms=record_max_ms,
        turns=(
            Turn("provider", VOICEMAIL_PROMPT.format(business=business), ms=greeting_ms),
            Turn("provider", "", sound="beep", ms=beep_ms, pause_before_ms=300),
            Turn("agent", VOICEMAIL_MESSAGE, tools=(ToolCall("end_call", {"reason": "voicemail"}),)),
        ),
    )


def demo_personas(ms_per_char: int = 25, *, real_lines: bool = False, callbacks: bool = False) -> PersonaBook:
    """Three providers for `make demo`: two deals at different prices and one that will not go low enough.

    `real_lines` adds two harder lines a newcomer should see handled: a receptionist whose long greeting Twilio's
    answering-machine detection takes for a machine, and a business behind a phone menu.
    `callbacks` scripts the market's second round: the phone-menu business beats the first quote in round 1
    ($170), Bay Pipe Pros beats that when called back with it ($150), and everyone else keeps its price."""
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
    book = PersonaBook([
        negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175, ms_per_char=ms_per_char),
        negotiation("Bay Pipe Pros", "+14155550102", first_quote=250, counter=150, final=180, ms_per_char=ms_per_char),
        refuse,
    ])
    if real_lines:
        book.add(receptionist("Summit Plumbing and Drain", "+14155550104", first_quote=225, counter=150, final=180,
                              ms_per_char=ms_per_char))
        book.add(phone_menu("Ace Drain", "+14155550105", first_quote=200, counter=150,
                            final=170 if callbacks else 175, ms_per_char=ms_per_char))
    if callbacks:
        # The two plain negotiations follow the offer policy here, so the demo shows its moves (and the real
        # earlier quote it puts to Bay Pipe Pros); the harder lines keep their scripts.
        book.add(follow_policy("Joe's Plumbing", "+14155550101", first_quote=200, final=175, ms_per_char=ms_per_char))
        book.add(follow_policy("Bay Pipe Pros", "+14155550102", first_quote=250, final=180, ms_per_char=ms_per_char))
        later = {"Joe's Plumbing": (None, 175), "Bay Pipe Pros": (150, 180), "Drip Masters": (None, 300),
                 "Summit Plumbing and Drain": (None, 180), "Ace Drain": (None, 170)}
        for persona in list(book):
            answer, standing = later[persona.business]
            book.add(replace(persona, callbacks=(callback(standing=standing, answer=answer),)))
    return book
