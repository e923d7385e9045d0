"""The deterministic price extractor: reads a negotiation transcript and says whether a price was agreed.

It is the fallback when xAI is unreachable and the second opinion when it is not, so it must never need the
network and must give the same answer twice. It follows the negotiation the way a person reading the
transcript would: who proposed what, who accepted or rejected which proposal, and how the talk ended.

Roles: `assistant` is our agent, the BUYER (speaking for the homeowner); `user` is the provider, the SELLER.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Literal

import msgspec
from haggle_contracts import events as ev

from haggle_extractor import phrases
from haggle_extractor.spoken_numbers import Mention, MentionKind, find_mentions

logger = logging.getLogger(__name__)

__all__ = ["Extraction", "Line", "Reading", "Transcript", "TranscriptError", "extract_offline", "normalise_transcript"]

Role = Literal["buyer", "seller"]
_ROLE_OF = {"assistant": "buyer", "user": "seller", "buyer": "buyer", "seller": "seller", "agent": "buyer",
            "provider": "seller"}  # fmt: skip


class Reading(msgspec.Struct, kw_only=True):
    """What a reader (this module, or the xAI model's JSON reply) says one call came to."""

    agreed: bool
    price: float | None  # the agreed price; None without a deal
    initial_quote: float | None
    price_type: ev.PriceType
    conditions: str
    evidence: list[str]
    outcome: ev.Outcome  # a transcript reading gives AGREED, NO_AGREEMENT or DECLINED


class Extraction(Reading, kw_only=True):
    """A reading with how it was made and, when two readers differ, how."""

    method: str = "offline"
    disagreement: str | None = None


class Line(msgspec.Struct, frozen=True):
    """One line of a transcript as a file gives it (`UtteranceTranscribed` has the same two fields)."""

    role: ev.Role
    text: str


class TranscriptError(ValueError):
    """The transcript is not a list of {"role": "assistant"|"user", "text": str}."""


@dataclass(frozen=True, slots=True)
class _Turn:
    index: int
    speaker: Role
    text: str


Transcript = Sequence[Line] | Sequence[ev.UtteranceTranscribed] | Sequence[Mapping[str, object]]


def normalise_transcript(transcript: Transcript | object) -> list[_Turn]:
    """Validate the transcript shape and map roles to buyer/seller; empty utterances are dropped.

    Typed lines (`Line`, `UtteranceTranscribed`) were validated when they were decoded; plain mappings (a test's
    or a data set's dicts) are checked here, and may also name the roles buyer/seller.
    """
    if not isinstance(transcript, Sequence) or isinstance(transcript, str | bytes):
        raise TranscriptError(f"transcript must be a list of turns, got {type(transcript).__name__}")
    turns: list[_Turn] = []
    for n, item in enumerate(transcript):
        if isinstance(item, Line | ev.UtteranceTranscribed):
            if item.text.strip():
                turns.append(_Turn(len(turns), _ROLE_OF[item.role.value], item.text.strip()))  # type: ignore[arg-type]
            continue
        if not isinstance(item, Mapping):
            raise TranscriptError(f"turn {n} must be an object with role and text, got {type(item).__name__}")
        role = item.get("role")
        text = item.get("text")
        if role not in _ROLE_OF:
            raise TranscriptError(f"turn {n} has role {role!r}; expected 'assistant' or 'user'")
        if not isinstance(text, str):
            raise TranscriptError(f"turn {n} text must be a string, got {type(text).__name__}")
        if text.strip():
            turns.append(_Turn(len(turns), _ROLE_OF[role], text.strip()))  # type: ignore[arg-type]
    return turns


# ---------------------------------------------------------------------------------------------------------
# Speech acts: the phrase patterns are in phrases.py; this is how a sentence is read with them.


@dataclass(slots=True)
class _Offer:
    speaker: Role
    value: float
    kind: MentionKind
    turn: int
    framed: bool  # money-marked: stronger than a bare number
    total: bool = False  # "for a total of $14"
    question: bool = False  # said in a question ("would you take 140?")
    named: bool = False  # "your offer of $1325": the number an acceptance names


@dataclass(slots=True)
class _TurnInfo:
    turn: _Turn
    offers: list[_Offer] = field(default_factory=list)
    mentioned: list[float] = field(default_factory=list)  # every price-like value, offers or not
    marked: list[float] = field(default_factory=list)  # the money-marked ones
    negated: list[float] = field(default_factory=list)  # "I can't afford 1700": named only to be refused
    to_their_offer: bool = False  # "I accept your offer"
    accept: bool = False
    weak_accept: bool = False
    reject: bool = False
    decline: bool = False
    defer: bool = False
    own_deal: bool = False  # "let's call it 38 and it's a deal": an acceptance of one's own number
    conditions: list[str] = field(default_factory=list)


_SENTENCE_RE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)|[.!?]+")


def _sentences(text: str) -> list[tuple[str, int]]:
    """Sentences with their start offsets; decimals ("1.75", "$2.50") do not split."""
    protected = re.sub(r"(?<=\d)\.(?=\d)", "\x00", text)
    out: list[tuple[str, int]] = []
    for m in _SENTENCE_RE.finditer(protected):
        chunk = m.group().replace("\x00", ".")
        if chunk.strip():
            out.append((chunk, m.start()))
    return out


def _accepts(sentence: str) -> tuple[bool, bool]:
    """(strong, weak) acceptance in one sentence. A question asks for a yes, it does not give one."""
    s = sentence.strip()
    if s.endswith("?"):
        # "Ok that works, but you'd pick it up, right?": the clauses before the question can still say yes.
        head = re.split(r",|\bbut\b", s)[0]
        if head == s or phrases.QUESTION_START.match(head.strip()):
            return False, False
        s = head
        weak_ok = False  # "Awesome, are they in good shape?" is a reaction, not a yes
    else:
        weak_ok = True
    low = re.sub(r"\s+", " ", s.lower()).lstrip("\"'([ ")
    strong = False
    for m in phrases.ACCEPT_STRONG.finditer(low):
        if not phrases.NEGATED.search(low[: m.start()]) and not phrases.BUT.match(low[m.end() :]):
            strong = True
            break
    weak = weak_ok and bool(phrases.WEAK_ACCEPT.match(low))
    return strong, weak


def _analyse(turn: _Turn) -> _TurnInfo:
    info = _TurnInfo(turn=turn)
    text = turn.text
    mentions = [m for m in find_mentions(text) if not _is_menu_key(text, m)]
    sentences = _sentences(text)
    for n, (sentence, offset) in enumerate(sentences):
        strong, weak = _accepts(sentence)
        weak = weak and not phrases.GOODBYE.search(sentence)
        info.accept |= strong
        if strong and phrases.TO_THEIR_OFFER.search(sentence):
            info.to_their_offer = True
        info.weak_accept |= weak and (n == 0 or not mentions)
        info.weak_accept |= bool(phrases.LOGISTICS.search(sentence)) and not phrases.NEGATED_LOGISTICS.search(sentence)
        norm = re.sub(r"\s+", " ", sentence).strip().lstrip("\"'([ ")
        info.reject |= bool(phrases.REJECT.search(norm))
        info.defer |= bool(phrases.DEFER.search(norm))
        if turn.speaker == "seller":
            info.decline |= bool(phrases.DECLINE.search(norm))
        in_sentence = [m for m in mentions if offset <= m.start < offset + len(sentence)]
        if strong and in_sentence and phrases.OWN_DEAL.search(sentence):
            info.own_deal = True
        info.conditions.extend(c.group().strip() for c in phrases.CONDITIONS.finditer(sentence))
    for m in mentions:
        if not m.is_price_like:
            continue
        info.mentioned.append(m.value)
        if m.money:
            info.marked.append(m.value)
        if _is_reference(text, m):
            before, after = _clause_before(text, m), text[m.end : m.end + 50]
            if phrases.ECHO_REJECT_BEFORE.search(before) or phrases.REFUSED_AFTER.search(after):
                info.negated.append(m.value)
            continue
        lead = text[max(0, m.start - 25) : m.start]
        total = bool(phrases.TOTAL_LEAD.search(lead))
        question = any(off <= m.start < off + len(sent) and sent.rstrip().endswith("?") for sent, off in sentences)
        named = bool(phrases.NAMED_LEAD.search(lead))
        info.offers.append(_Offer(turn.speaker, m.value, m.kind, turn.index, m.money, total, question, named))
    return info


def _is_menu_key(text: str, m: Mention) -> bool:
    """A phone menu's key or an extension ("press 2", "option 4", "2 for billing"): a number, never a price.

    Why: a menu read as an offer becomes a deal when the agent says "okay" (the offline fallback once read "press
    2" as an agreed $2). A money-marked amount ("$2") is never a key."""
    if m.money:
        return False
    before = text[max(0, m.start - 40) : m.start]
    return bool(phrases.MENU_KEY_BEFORE.search(before) or phrases.MENU_KEY_AFTER.match(text[m.end : m.end + 40]))


def _clause_before(text: str, m: Mention) -> str:
    return re.split(r"[.!?;]\s", text[max(0, m.start - 60) : m.start])[-1]


def _is_reference(text: str, m: Mention) -> bool:
    """A number that prices something else: "paid $1200 new", "a $20 case", "$75 is too low"."""
    before = _clause_before(text, m)
    after = text[m.end : m.end + 50]
    if phrases.REFERENCE_BEFORE.search(before) or phrases.REFERENCE_AFTER.search(after):
        return True
    if m.money and phrases.ARTICLE_BEFORE.search(before) and phrases.ATTRIBUTIVE_AFTER.match(after):
        return True  # "a $20 case", "a $150 coupon package"
    return bool(phrases.ECHO_REJECT_BEFORE.search(before) and not phrases.COMPARATIVE_BEFORE.search(before))


# ---------------------------------------------------------------------------------------------------------
# The negotiation


@dataclass(slots=True)
class _Deal:
    offer: _Offer
    accept_turn: int
    turns: list[int]
    provisional: bool = False  # "2200 and you have a deal": an offer until the other side stops countering


def _same(a: float, b: float) -> bool:
    return abs(a - b) < 0.005


def _filter_scale(infos: list[_TurnInfo]) -> None:
    """Drop numbers far off the negotiation's scale ("be there in 20" in a $1,500 negotiation)."""
    marked = [v for i in infos for v in i.marked if v > 0]
    if len(marked) < 2:
        marked = [v for i in infos for v in i.mentioned if v > 0]
    if not marked:
        return
    anchor = median(marked)
    for info in infos:
        info.offers = [o for o in info.offers if _on_scale(o, anchor)]


def _on_scale(offer: _Offer, anchor: float) -> bool:
    spread = 20 if offer.framed else 8  # a "$" makes an odd number more believable
    return anchor / spread <= offer.value <= anchor * spread


def _inherit_kinds(infos: list[_TurnInfo]) -> None:
    """A bare counter to "$95 an hour" is an hourly rate too; to "$79 to come out", a fee."""
    last: _Offer | None = None
    for info in infos:
        for offer in info.offers:
            explicit = offer.kind in (MentionKind.HOURLY, MentionKind.FEE)
            flat = bool(phrases.FLAT_CUE.search(info.turn.text))
            if (
                not explicit
                and not flat
                and last is not None
                and last.kind in (MentionKind.HOURLY, MentionKind.FEE)
                and 0.5 * last.value <= offer.value <= 1.5 * last.value
            ):
                offer.kind = last.kind
            last = offer


def _current(offers: Iterable[_Offer]) -> _Offer | None:
    """The position a turn states: a stated total, else its last offer, a job price before a fee."""
    items = list(offers)
    totals = [o for o in items if o.total]
    if totals:
        return totals[-1]
    main = [o for o in items if o.kind is not MentionKind.FEE]
    pool = main or items
    return pool[-1] if pool else None


def _latest(history: list[_TurnInfo], speaker: Role, *, offers: bool) -> _TurnInfo | None:
    for h in reversed(history):
        if h.turn.speaker == speaker and (h.offers if offers else h.mentioned):
            return h
    return None


def _other(role: Role) -> Role:
    return "seller" if role == "buyer" else "buyer"


def _as_offer(value: float, info: _TurnInfo) -> _Offer:
    """The offer object behind a value someone mentioned (an echo keeps the original's kind)."""
    for offer in info.offers:
        if _same(offer.value, value):
            return offer
    return _Offer(info.turn.speaker, value, MentionKind.PRICE, info.turn.index, True)


def _accepted_offer(info: _TurnInfo, history: list[_TurnInfo]) -> _Offer | None:
    """Which earlier offer this accepting turn accepts, or None if it is really a counter-offer."""
    me = info.turn.speaker
    them = _other(me)
    latest_theirs = _latest(history, them, offers=True)
    current = _current(info.offers)
    if info.to_their_offer:
        named = next((o for o in info.offers if o.named), None)
        if named is not None:  # "I will accept your offer of 1325"
            return next((_as_offer(named.value, h) for h in reversed(history) if h.turn.speaker == them
                         and any(_same(v, named.value) for v in h.mentioned)), named)
        if latest_theirs is not None:
            return _current(latest_theirs.offers)  # "I'll accept your offer" (whatever else it mentions)
    if current is not None:
        for h in reversed(history):
            if h.turn.speaker == them and any(_same(v, current.value) for v in h.mentioned):
                return _as_offer(current.value, h)  # "$135 it is", "I'll take the 70 deal"
        if info.own_deal:
            return _current(info.offers)
        return None  # "ok, how about 16?" is a counter, not a yes
    latest_mine = _latest(history, me, offers=True)
    if (
        latest_mine is not None
        and info.accept
        and phrases.RETROSPECTIVE.search(info.turn.text)
        and (latest_theirs is None or latest_mine.turn.index > latest_theirs.turn.index)
        and not any(h.reject for h in history[latest_mine.turn.index + 1 :])
    ):
        return _current(latest_mine.offers)  # "[my offer]" ... "Glad we could make a deal": they took mine
    if latest_theirs is not None:
        if (
            latest_mine is not None
            and latest_mine.turn.index > latest_theirs.turn.index
            and info.weak_accept
            and not info.accept
        ):
            return None  # "ok" after my own newer offer is not a yes to theirs
        return _current(latest_theirs.offers)
    if latest_mine is not None and info.accept:
        return _current(latest_mine.offers)  # they agreed in words only; this is our yes to our own number
    return None


def _recent_offer(history: list[_TurnInfo], me: Role, within: int) -> bool:
    """Whether the other side proposed something in the last `within` turns (for a bare "ok" to count)."""
    return any(h.turn.speaker != me and h.offers for h in history[-within:])


def _converges(info: _TurnInfo, history: list[_TurnInfo]) -> _Offer | None:
    """Naming the other side's own latest number is agreeing to it ("Could we do $100?" "I can swing $100")."""
    if info.reject or not info.offers:
        return None
    theirs = _latest(history, _other(info.turn.speaker), offers=False)
    mine = _current(info.offers)
    if theirs is None or mine is None:
        return None
    if mine.question:
        return None  # "Is that $290 a month?" asks about their number, it does not take it
    mine_before = [o.value for h in history for o in h.offers if h.turn.speaker == info.turn.speaker]
    refused = any(_same(v, mine.value) for v in theirs.negated) and any(_same(v, mine.value) for v in mine_before)
    if any(_same(v, mine.value) for v in theirs.mentioned) and not refused:
        return _as_offer(mine.value, theirs)  # not when they just refused this very number of mine
    for h in reversed(history):  # going back to a number they once offered takes that offer
        if h.turn.speaker != info.turn.speaker:
            for offer in h.offers:
                if _same(offer.value, mine.value):
                    return offer
    return None


def extract_offline(transcript: Transcript) -> Extraction:
    """Who agreed to what: the deterministic reading of a buyer (assistant) / seller (user) negotiation."""
    turns = normalise_transcript(transcript)
    infos = [_analyse(t) for t in turns]
    _filter_scale(infos)
    _inherit_kinds(infos)

    deal: _Deal | None = None
    history: list[_TurnInfo] = []
    last_reject: _TurnInfo | None = None
    for info in infos:
        me = info.turn.speaker
        idx = info.turn.index
        mine = _current(info.offers)
        if (
            deal is not None
            and deal.provisional
            and me != deal.offer.speaker
            and mine is not None
            and not _same(mine.value, deal.offer.value)
        ):
            deal = None  # they countered the "... and it's a deal" offer
        said_yes = info.accept or (info.weak_accept and not info.reject and _recent_offer(history, me, 2))
        new_offer_since = deal is not None and any(h.offers for h in history if h.turn.index > deal.accept_turn)
        if said_yes and not (info.reject and not info.accept):
            if deal is not None and not new_offer_since and (mine is None or _same(mine.value, deal.offer.value)):
                deal.turns.append(idx)  # a confirmation of the deal already made
                if me != deal.offer.speaker:
                    deal.provisional = False
            elif not info.defer:  # "sounds good, let me check with the homeowner" is not a yes yet
                target = _accepted_offer(info, history)
                if target is not None:
                    own = target.speaker == me and target.turn == idx
                    deal = _Deal(target, idx, [target.turn, idx], provisional=own)
        elif (target := _converges(info, history)) is not None:
            deal = _Deal(target, idx, [target.turn, idx])
        elif info.reject or info.decline:
            last_reject = info
        if deal is not None and idx > deal.accept_turn and not info.offers and _backs_out(info):
            deal = None
            last_reject = info
        if deal is not None and _reopened(deal, infos[deal.accept_turn + 1 : idx + 1]):
            deal = None  # they went on haggling over other numbers: whatever was said before did not stick
        history.append(info)

    if deal is None:
        deal = _near_close(infos)
    return _result(infos, deal, last_reject)


def _reopened(deal: _Deal, after: list[_TurnInfo]) -> bool:
    """Both sides proposing other numbers after a deal, or refusing a number, means it was not one."""
    others: dict[str, bool] = {}
    for info in after:
        moved = [o for o in info.offers if not _same(o.value, deal.offer.value)]
        if moved:
            others[info.turn.speaker] = True
            if info.reject and not info.accept:
                return True
    return len(others) == 2


_CLOSE_GAP = 0.05


def _near_close(infos: list[_TurnInfo]) -> _Deal | None:
    """Both sides' last offers within a few percent and nobody objected after: they have met.

    Typed negotiations often end on a final small concession that the other side takes without a word
    (the chat's offer form, a nod on a call): a last offer within 5% of the other side's standing offer,
    followed by no rejection, deferral or refusal, is read as accepted.
    """
    offer_turns = [i for i in infos if i.offers]
    if not offer_turns:
        return None
    last = offer_turns[-1]
    after = infos[last.turn.index + 1 :]
    if last.reject or last.defer or any(i.reject or i.defer or i.decline or _backs_out(i) for i in after):
        return None
    theirs = next((i for i in reversed(offer_turns) if i.turn.speaker != last.turn.speaker), None)
    mine, other = _current(last.offers), _current(theirs.offers) if theirs else None
    if mine is None or other is None or _same(mine.value, other.value):
        return None
    if abs(mine.value - other.value) / max(mine.value, other.value) > _CLOSE_GAP:
        return None
    return _Deal(mine, last.turn.index, [theirs.turn.index, last.turn.index])  # type: ignore[union-attr]


def _backs_out(info: _TurnInfo) -> bool:
    return bool(phrases.BACK_OUT.search(info.turn.text))


def _price_type(kind: MentionKind | None) -> ev.PriceType:
    if kind is MentionKind.HOURLY:
        return ev.PriceType.HOURLY
    if kind is MentionKind.FEE:
        return ev.PriceType.VISIT_FEE
    if kind is None:
        return ev.PriceType.UNKNOWN
    return ev.PriceType.FLAT


def _result(infos: list[_TurnInfo], deal: _Deal | None, last_reject: _TurnInfo | None) -> Extraction:
    seller_offers = [o for i in infos for o in i.offers if o.speaker == "seller"]
    # The provider's first quote for the thing the call settled on: the visit fee if a fee was agreed,
    # else the job (a "$49 trip charge" said first is not the quote for the repair).
    fees = [o for o in seller_offers if o.kind is MentionKind.FEE]
    jobs = [o for o in seller_offers if o.kind is not MentionKind.FEE]
    if deal is not None and deal.offer.kind is MentionKind.FEE:
        first_quote = (fees or jobs or [None])[0]
    else:
        first_quote = (jobs or fees or [None])[0]
    initial = first_quote.value if first_quote is not None else None

    if deal is not None:
        upto = deal.accept_turn
        conditions = _collect_conditions(infos, upto, deal.offer.kind)
        evidence = _evidence(infos, deal.turns)
        return Extraction(
            agreed=True,
            price=deal.offer.value,
            initial_quote=initial,
            price_type=_price_type(deal.offer.kind),
            conditions=conditions,
            evidence=evidence,
            outcome=ev.Outcome.AGREED,
        )

    declined = any(i.decline for i in infos) and not seller_offers
    ev_turns: list[int] = []
    if first_quote is not None:
        ev_turns.append(first_quote.turn)
    deferred = [i.turn.index for i in infos if i.defer]
    if last_reject is not None:
        ev_turns.append(last_reject.turn.index)
    elif deferred:
        ev_turns.append(deferred[-1])
    elif declined:
        ev_turns.extend(i.turn.index for i in infos if i.decline)
    if not ev_turns and infos:  # no price talk at all: the provider's last word is what there is
        sellers = [i.turn.index for i in infos if i.turn.speaker == "seller"]
        ev_turns.append(sellers[-1] if sellers else infos[-1].turn.index)
    return Extraction(
        agreed=False,
        price=None,
        initial_quote=initial,
        price_type=_price_type(first_quote.kind if first_quote else None),
        conditions=_collect_conditions(infos, len(infos), first_quote.kind if first_quote else None),
        evidence=_evidence(infos, ev_turns),
        outcome=ev.Outcome.DECLINED if declined else ev.Outcome.NO_AGREEMENT,
    )


def _collect_conditions(infos: list[_TurnInfo], upto: int, kind: MentionKind | None) -> str:
    seen: list[str] = []
    for info in infos:
        if info.turn.index > upto:
            break
        for cond in info.conditions:
            norm = re.sub(r"\s+", " ", cond.lower())
            if norm not in seen:
                seen.append(norm)
    fees = [o for i in infos if i.turn.index <= upto for o in i.offers
            if o.speaker == "seller" and o.kind is MentionKind.FEE]
    if kind is not None and kind is not MentionKind.FEE and fees and not any("waived" in s for s in seen):
        fee = f"plus ${fees[-1].value:g} visit fee"
        if fee not in seen:
            seen.append(fee)
    return "; ".join(seen)


def _evidence(infos: list[_TurnInfo], turn_indexes: Iterable[int]) -> list[str]:
    out: list[str] = []
    for idx in sorted(set(turn_indexes)):
        text = infos[idx].turn.text
        if text not in out:
            out.append(text)
    return out
