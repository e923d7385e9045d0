"""The offer policy: every negotiating move, decided in code from the facts of the call and the job.

The voice model only voices the move. It consults this through `record_quote` (called whenever the business
states or changes a price); the tool's output is `Move`, `{"action", "offer", "say"}`. A deterministic offer
generator with the language model as the voice is the arrangement that lifted buyer deal rates in the
negotiation literature (see docs/negotiation.md); here it also makes the rules below hold in code, not in a prompt:

- never offer or accept an all-in price above `max_price`;
- offers only go up: a new offer is never below one already made, and never above what the business already
  asked (paying more than asked is not negotiating);
- a competing quote is mentioned only when `use_competing_quotes` is on and the number is the standing quote
  another provider of this job really stated (it is taken from `job_quotes`, never computed), for comparable
  scope (`scope.comparable`), and lower than this business's current all-in price;
- `say` is one of a few fixed templates filled only with numbers from the inputs: no urgency, no invented facts.

Prices the business states are headline prices; its scope's visit fee is added for the all-in figure that
`max_price`, the target and competing quotes are compared with. Offers are headline prices too, so the business
hears a number on the same basis as its own.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import msgspec

from .scope import Money, Quote, Scope, all_in, best_comparable, extra

Action = Literal["counter", "accept", "decline"]

DEFAULT_TARGET_DISCOUNT = 0.25  # no target given: aim 25% under the first all-in quote (the seed prompt's 20-30%)
# Share of the gap between our last offer and their ask that each successive counter gives up. Small at first,
# larger later; halved when the business has not moved since our last offer (we do not bid against ourselves).
CONCESSION_SCHEDULE = (0.35, 0.5, 0.65)
BEAT_MARGIN = 0.1  # citing a competing quote, ask them to beat it by about this share
# A bare counter far under the ask reads as a lowball and can end the call; only a real competing quote justifies
# going lower than this share of their current price.
MIN_COUNTER_SHARE = 0.8


class Move(msgspec.Struct, kw_only=True, frozen=True):
    """The next move: exactly the `record_quote` tool's output."""

    action: Action
    offer: float | None
    say: str


class OfferFacts(msgspec.Struct, kw_only=True, frozen=True):
    """Everything a move may depend on, as plain inputs (all of it from the call's and the job's events)."""

    provider_id: str
    max_price: Annotated[float, msgspec.Meta(gt=0)]  # all-in ceiling
    their_prices: Annotated[list[Money], msgspec.Meta(min_length=1)]  # headline prices they stated, oldest first
    our_offers: list[Money] = msgspec.field(default_factory=list)  # our counters so far (all calls), oldest first
    counters_this_call: Annotated[int, msgspec.Meta(ge=0)] = 0
    final: bool = False  # the business called its current price final / its best
    scope: Scope = Scope()  # what this business's price covers
    target: Money | None = None  # all-in aim; None: DEFAULT_TARGET_DISCOUNT under the first all-in quote
    job_quotes: list[Quote] = msgspec.field(default_factory=list)  # every price stated by any provider of the job
    use_competing_quotes: bool = True
    cited: list[Money] = msgspec.field(default_factory=list)  # competing all-in prices already put to them
    max_counters: Annotated[int, msgspec.Meta(ge=0)] = 3  # counters per call before accepting or declining

    @property
    def first_quote(self) -> float:
        return self.their_prices[0]

    @property
    def current_price(self) -> float:
        return self.their_prices[-1]


class Decision(msgspec.Struct, kw_only=True, frozen=True):
    """A move with why it was chosen: what an `OfferDecided` event would carry next to its inputs."""

    move: Move
    reason: str
    ask_all_in: float
    offer_all_in: float | None = None
    competitor: Quote | None = None  # the competing quote `say` cites, if any


class InvalidFacts(ValueError):
    """Facts that cannot describe a real negotiation (negative or non-finite prices)."""


def money(value: float) -> str:
    """How a number is spoken in `say`: "$175", or "$175.50" when there are cents."""
    cents = round(value * 100)
    return f"${cents // 100:,}" if cents % 100 == 0 else f"${cents / 100:,.2f}"


def _check(facts: OfferFacts) -> None:
    numbers = [facts.max_price, *facts.their_prices, *facts.our_offers, extra(facts.scope)]
    if facts.target is not None:
        numbers.append(facts.target)
    bad = [n for n in numbers if not math.isfinite(n) or n < 0]
    if bad:
        raise InvalidFacts(f"prices must be finite and non-negative (got {bad[0]!r})")
    if not facts.their_prices:
        raise InvalidFacts("their_prices needs at least the price the business just stated")
    if facts.max_price <= 0:
        raise InvalidFacts(f"max_price must be positive (got {facts.max_price!r})")


def _round_offer(value: float, floor: float, ceiling: float) -> float:
    """Whole dollars (tens of cents for small sums), kept inside [floor, ceiling]."""
    step = 1.0 if value >= 20 else 0.1
    rounded = math.floor(value / step) * step
    return round(min(ceiling, max(floor, rounded)), 2)


def _say_fee(facts: OfferFacts) -> str:
    fee = extra(facts.scope)
    return f" plus the {money(fee)} call-out fee" if fee > 0 else ""


def _quoted_line(competitor: Quote) -> str:
    """The competing quote as it was given: quoted or agreed, its price, and its call-out fee when it has one."""
    fee = extra(competitor.scope)
    plus = f" plus a {money(fee)} call-out fee" if fee > 0 else ""
    if competitor.agreed:
        return f"Another provider agreed to do comparable work for {money(competitor.price)}{plus}."
    return f"Another provider quoted me {money(competitor.price)}{plus} for comparable work."


def _accept(facts: OfferFacts, reason: str) -> Decision:
    ask = facts.current_price
    say = f"{money(ask)} works for me. Let's go ahead at {money(ask)}{_say_fee(facts)}."
    return Decision(
        move=Move(action="accept", offer=ask, say=say), reason=reason,
        ask_all_in=round(ask + extra(facts.scope), 2), offer_all_in=round(ask + extra(facts.scope), 2),
    )


def _decline(facts: OfferFacts, reason: str) -> Decision:
    if facts.final:
        say = ("I understand that is your best price. It is more than I can spend on this job, so I will pass. "
               "Thank you.")
    else:
        say = "Thank you, but that is more than I can spend on this job, so I will pass."
    return Decision(move=Move(action="decline", offer=None, say=say), reason=reason,
                    ask_all_in=round(facts.current_price + extra(facts.scope), 2))


def beat_price(competitor: Quote) -> float:
    """The all-in price to ask for when putting a competing quote to a business."""
    return round(all_in(competitor) * (1 - BEAT_MARGIN), 2)


def target_all_in(facts: OfferFacts) -> float:
    """The all-in price accepted at once: the given target (or 25% under the first quote), no higher than the
    maximum, and no higher than what a real lower competing quote lets us ask for."""
    if facts.target is not None:
        target = min(facts.target, facts.max_price)
    else:
        first_all_in = facts.first_quote + extra(facts.scope)
        target = min(facts.max_price, round(first_all_in * (1 - DEFAULT_TARGET_DISCOUNT), 2))
    competitor = competitor_for(facts)
    return target if competitor is None else min(target, beat_price(competitor))


def competitor_for(facts: OfferFacts) -> Quote | None:
    """The competing quote this call may cite: real, another provider's, comparable, and lower than the ask."""
    if not facts.use_competing_quotes:
        return None
    best = best_comparable(facts.job_quotes, facts.provider_id, facts.scope)
    if best is None or all_in(best) >= facts.current_price + extra(facts.scope):
        return None
    return best


def _next_offer(facts: OfferFacts, floor: float, ceiling: float, competitor: Quote | None) -> float:
    fee = extra(facts.scope)
    if not facts.our_offers:
        aim = target_all_in(facts) - fee
    else:
        last = facts.our_offers[-1]
        index = min(facts.counters_this_call, len(CONCESSION_SCHEDULE) - 1)
        share = CONCESSION_SCHEDULE[index]
        moved = len(facts.their_prices) >= 2 and facts.their_prices[-1] < facts.their_prices[-2]
        if not moved:
            share /= 2
        aim = last + share * max(0.0, facts.current_price - last)
    aim = max(aim, MIN_COUNTER_SHARE * facts.current_price)
    if competitor is not None:
        # Put to them once, a real lower quote is asked to be beaten; after that, never offer more than it.
        beat = beat_price(competitor) if all_in(competitor) not in facts.cited else all_in(competitor)
        aim = min(aim, beat - fee)
    return _round_offer(aim, floor, ceiling)


def decide(facts: OfferFacts) -> Decision:
    """The next move. Raises InvalidFacts for prices no negotiation can have."""
    _check(facts)
    fee = extra(facts.scope)
    ask = facts.current_price
    ask_all_in = ask + fee
    within_max = ask_all_in <= facts.max_price
    last_offer = max(facts.our_offers, default=None)

    if within_max and ask_all_in <= target_all_in(facts):
        return _accept(facts, "at_or_under_target")
    if within_max and last_offer is not None and ask <= last_offer:
        return _accept(facts, "met_our_offer")

    out_of_counters = facts.counters_this_call >= facts.max_counters
    if facts.final or out_of_counters:
        # One last counter is still worth it against a "final" price when a real, lower competing quote has not
        # been put to them yet; after that, final means final.
        competitor = competitor_for(facts)
        if facts.final and competitor is not None and not out_of_counters and all_in(competitor) not in facts.cited:
            counter = _counter(facts, competitor, "final_but_competitor_lower")
            if counter is not None and counter.competitor is not None:
                return counter
        if within_max:
            return _accept(facts, "final_within_max" if facts.final else "counters_used_within_max")
        last = _last_offer(facts)
        if last is not None:
            return last
        return _decline(facts, "final_over_max" if facts.final else "counters_used_over_max")

    counter = _counter(facts, competitor_for(facts), "counter")
    if counter is not None:
        return counter
    if within_max:
        return _accept(facts, "no_room_within_max")
    return _last_offer(facts) or _decline(facts, "no_room_under_max")


def _ceiling(facts: OfferFacts) -> float:
    """The highest offer allowed: never above max_price all-in, never above a price they already asked."""
    return round(min(facts.max_price - extra(facts.scope), min(facts.their_prices)), 2)


def _last_offer(facts: OfferFacts) -> Decision | None:
    """Their price is over the maximum and they will not (or we will not) keep bargaining: before declining, put
    the highest offer the rules allow to them once. Monotone offers make this happen at most once."""
    fee = extra(facts.scope)
    ceiling = _ceiling(facts)
    if ceiling <= 0 or ceiling <= max(facts.our_offers, default=0.0) or ceiling >= facts.current_price:
        return None
    say = f"The most I can do is {money(ceiling)}{_say_fee(facts)}."
    return Decision(move=Move(action="counter", offer=ceiling, say=say), reason="last_offer_at_limit",
                    ask_all_in=round(facts.current_price + fee, 2), offer_all_in=round(ceiling + fee, 2))


def _counter(facts: OfferFacts, competitor: Quote | None, reason: str) -> Decision | None:
    """A counter inside the hard limits, or None when there is no room for one."""
    fee = extra(facts.scope)
    floor = max(facts.our_offers, default=0.0)  # offers only go up
    ceiling = _ceiling(facts)
    if ceiling < floor or ceiling <= 0:
        return None
    offer = _next_offer(facts, floor, ceiling, competitor)
    if competitor is not None and (offer + fee >= all_in(competitor) or all_in(competitor) in facts.cited):
        competitor = None  # already put to them, or the clamp left no reason to bring it up: the number alone
    repeat = bool(facts.our_offers) and offer <= floor and facts.counters_this_call > 0
    if offer >= facts.current_price or (repeat and competitor is None):
        return None  # nothing new to put to them (a repeat is worth it only with a new competing quote)
    if competitor is not None:
        say = f"{_quoted_line(competitor)} Could you do it for {money(offer)}{_say_fee(facts)}?"
        reason = "counter_with_competitor" if reason == "counter" else reason
    else:
        say = f"Could you do it for {money(offer)}{_say_fee(facts)}?"
    return Decision(move=Move(action="counter", offer=offer, say=say), reason=reason,
                    ask_all_in=round(facts.current_price + fee, 2), offer_all_in=round(offer + fee, 2),
                    competitor=competitor)
