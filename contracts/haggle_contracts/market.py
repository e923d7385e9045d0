"""The job as the unit that negotiates: which providers to call next, in which round, and when the job is done.

Pure decisions over plain inputs, so the dispatcher (which places the calls) and the eval simulator (which
plays them) use the same rules:

- `independent`: every provider at once, one round, each call on its own (no competing quotes).
- `market`: the first round is staggered. While no price is known, only `opening_calls` calls run; once a real
  quote exists the rest go out (within `max_concurrent_calls`), so later calls know earlier quotes. Then each
  further round (up to `rounds`) calls back the providers whose standing quote is above the best comparable
  real quote they have not yet heard, carrying that quote. A provider is never called back with a number it
  has already been shown, so the rounds end: the job is complete when nothing is running and no callback could
  improve the best all-in price. With competing quotes off, `market` plans exactly like `independent`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .scope import Quote, all_in, best_comparable, extra, rank, standing_quotes

Strategy = Literal["market", "independent"]
STRATEGIES: tuple[Strategy, ...] = ("market", "independent")
DEFAULT_ROUNDS = 2

# waiting: not called in any round yet; calling: a call (with its retries) is running; done: its last call is
# over and it may be called back; closed: never call again (walked away, asked not to be called, unreachable).
Status = Literal["waiting", "calling", "done", "closed"]


class MarketPolicy(msgspec.Struct, kw_only=True, frozen=True):
    """`NEGOTIATION_STRATEGY`, `NEGOTIATION_ROUNDS`, `MAX_CONCURRENT_CALLS`, `USE_COMPETING_QUOTES`."""

    strategy: Strategy = "market"
    rounds: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_ROUNDS
    max_concurrent_calls: Annotated[int, msgspec.Meta(ge=1)] = 10
    opening_calls: Annotated[int, msgspec.Meta(ge=1)] = 1  # market: calls running before any price is known
    use_competing_quotes: bool = True

    @property
    def max_rounds(self) -> int:
        return 1 if self.strategy == "independent" else self.rounds

    @property
    def cites_competitors(self) -> bool:
        return self.strategy == "market" and self.use_competing_quotes


class ProviderProgress(msgspec.Struct, kw_only=True, frozen=True):
    """Where one provider of the job stands."""

    provider_id: str
    status: Status = "waiting"
    rounds_called: Annotated[int, msgspec.Meta(ge=0)] = 0
    shown: float | None = None  # the competing all-in price its latest call carried (None: none)
    highest_offer: float | None = None  # our highest headline offer to it so far: offers never go below it


class MarketState(msgspec.Struct, kw_only=True, frozen=True):
    providers: list[ProviderProgress]
    quotes: list[Quote] = msgspec.field(default_factory=list)  # every price any provider of the job really stated


class PlannedCall(msgspec.Struct, kw_only=True, frozen=True):
    """A call to place, and why: what a `CallPlanned` event would carry."""

    provider_id: str
    round: int
    reason: Literal["independent", "opening", "informed", "callback"]
    competitor: Quote | None = None  # the real quote this call carries (market only)


def _running(state: MarketState) -> int:
    return sum(1 for p in state.providers if p.status == "calling")


def _standing(state: MarketState) -> dict[str, Quote]:
    return {q.provider_id: q for q in standing_quotes(state.quotes)}


def callback_for(state: MarketState, provider: ProviderProgress, policy: MarketPolicy) -> Quote | None:
    """The real competing quote that makes calling this provider back worth it, or None."""
    if provider.status != "done" or provider.rounds_called >= policy.max_rounds or not policy.cites_competitors:
        return None
    own = _standing(state).get(provider.provider_id)
    if own is None:
        return None  # it never named a price: there is nothing to beat
    best = best_comparable(state.quotes, provider.provider_id, own.scope)
    if best is None or all_in(best) >= all_in(own):
        return None
    if provider.highest_offer is not None and provider.highest_offer + extra(own.scope) >= all_in(best):
        return None  # offers never go back down, so any price it could agree now is no better than the best
    if provider.shown is not None and all_in(best) >= provider.shown:
        return None  # it has heard this (or a better) number already and did not beat it
    return best


def next_calls(state: MarketState, policy: MarketPolicy) -> list[PlannedCall]:
    """The calls to place now, within the free concurrent-call slots (empty: wait for running calls, or done)."""
    slots = policy.max_concurrent_calls - _running(state)
    if slots <= 0:
        return []
    waiting = [p for p in state.providers if p.status == "waiting"]
    if not policy.cites_competitors:
        # `independent`, or `market` with competing quotes off: an earlier quote could not be used, so staggering
        # would only make the job slower, and there is nothing to call back with.
        return [PlannedCall(provider_id=p.provider_id, round=p.rounds_called + 1, reason="independent")
                for p in waiting[:slots]]

    if waiting:
        known = rank(standing_quotes(state.quotes))
        if not known:
            free = min(slots, policy.opening_calls - _running(state))
            return [PlannedCall(provider_id=p.provider_id, round=p.rounds_called + 1, reason="opening")
                    for p in waiting[:max(0, free)]]
        return [PlannedCall(provider_id=p.provider_id, round=p.rounds_called + 1, reason="informed",
                            competitor=known[0]) for p in waiting[:slots]]

    if _running(state):
        return []  # a round ends before the next begins, so every callback carries the round's best
    planned = []
    for provider in state.providers:
        competitor = callback_for(state, provider, policy)
        if competitor is not None:
            planned.append(PlannedCall(provider_id=provider.provider_id, round=provider.rounds_called + 1,
                                       reason="callback", competitor=competitor))
    planned.sort(key=lambda c: (c.round, c.provider_id))
    return planned[:slots]


def job_complete(state: MarketState, policy: MarketPolicy) -> bool:
    """Nothing is running or waiting, and no further round can improve the best all-in price."""
    if any(p.status in ("waiting", "calling") for p in state.providers):
        return False
    return not next_calls(state, policy)
