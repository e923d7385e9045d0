"""A seeded market of simulated providers, to measure the offer policy and the market rounds offline.

Each market has 3 to 6 providers for one job. A provider has a hidden reservation price (it never agrees below
it), a call-out fee, a warranty and a concession style:

- firm: quotes close to its reservation and never moves ("that's my price");
- splits: meets a counter halfway, down to its reservation;
- anchors_high: opens far above its reservation, gives a big first concession, then splits;
- matches: moves little on a bare counter but matches a real competing quote it hears (down to its reservation);
  called back and told a real lower quote again, it beats that quote by a little (`BEAT_ON_CALLBACK`), still
  never below its reservation: a business that already lost the job once has a reason to undercut;
- walks_away: splits, but ends the call (and wants no callback) when a counter is far below its ask.

The simulated voice model does exactly what the move says: it puts the offer (and the competing quote, when
`say` cites one) to the provider, accepts, or declines. So this measures the policy and the orchestration, not
how well a voice model speaks or listens. Calls in one batch of `next_calls` run concurrently: each knows only
the quotes from earlier batches.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from haggle_contracts.market import MarketPolicy, MarketState, PlannedCall, ProviderProgress, job_complete, next_calls
from haggle_contracts.offer_policy import Decision, Move, OfferFacts, decide, money
from haggle_contracts.scope import Quote, Scope, all_in, extra

Style = Literal["firm", "splits", "anchors_high", "matches", "walks_away"]
STYLES: tuple[Style, ...] = ("firm", "splits", "anchors_high", "matches", "walks_away")
Strategy = Literal["market", "independent", "seed"]
STRATEGIES: tuple[Strategy, ...] = ("market", "independent", "seed")

_MARKUP: dict[Style, tuple[float, float]] = {
    "firm": (1.03, 1.12),
    "splits": (1.15, 1.45),
    "anchors_high": (1.5, 1.9),
    "matches": (1.15, 1.45),
    "walks_away": (1.15, 1.45),
}
_FEES = (0.0, 0.0, 0.0, 49.0, 79.0)
_WARRANTIES = (None, None, "90 days", "1 year")
# walks_away hangs up on a counter under a share of its ask drawn from this range. An assumption, and one the
# policy's MIN_COUNTER_SHARE (0.8) sits at the top of: only a counter that cites a real lower quote goes under it.
WALK_AWAY_BELOW = (0.65, 0.8)
MAX_TURNS = 12  # per call; the policy ends a call well before this
# A matching provider called back with a real lower quote beats it by this share (an assumption: real businesses
# told "I have $X from another licensed plumber, can you beat it?" sometimes do; how often is not measured here).
BEAT_ON_CALLBACK = 0.03
_NUMBER_RE = re.compile(r"\$([\d,]+(?:\.\d+)?)")


@dataclass(frozen=True)
class SimProvider:
    provider_id: str
    style: Style
    reservation: float  # headline price it will not go below (hidden from the policy)
    first_quote: float  # headline
    scope: Scope
    walk_below: float = 0.0  # walks_away: hangs up on a counter under this share of its ask

    @property
    def reservation_all_in(self) -> float:
        return self.reservation + extra(self.scope)

    @property
    def first_all_in(self) -> float:
        return self.first_quote + extra(self.scope)


@dataclass(frozen=True)
class SimMarket:
    seed: int
    max_price: float
    providers: tuple[SimProvider, ...]

    @property
    def lowest_reservation(self) -> float:
        return min(p.reservation_all_in for p in self.providers)

    @property
    def best_first_quote(self) -> float:
        return min(p.first_all_in for p in self.providers)


def make_market(seed: int) -> SimMarket:
    rng = random.Random(seed)
    cost = rng.uniform(120, 450)
    providers = []
    for i in range(rng.randint(3, 6)):
        style = rng.choice(STYLES)
        fee = rng.choice(_FEES)
        reservation = max(10.0, math.ceil(cost * rng.uniform(0.85, 1.3) - fee))
        first = math.ceil(reservation * rng.uniform(*_MARKUP[style]))
        scope = Scope(price_type="flat", visit_fee=fee or None, includes_parts=True, warranty=rng.choice(_WARRANTIES))
        providers.append(SimProvider(provider_id=f"p{i}", style=style, reservation=reservation, first_quote=first,
                                     scope=scope, walk_below=rng.uniform(*WALK_AWAY_BELOW)))
    return SimMarket(seed=seed, max_price=float(round(cost * rng.uniform(1.1, 1.5))), providers=tuple(providers))


@dataclass
class Mind:
    """A provider's side of the negotiation, kept across calls."""

    provider: SimProvider
    ask: float
    final: bool = False
    walked: bool = False
    agreed: float | None = None
    counters_heard: int = 0
    calls: int = 0  # calls it has taken so far (2+: this is a callback)

    def respond(self, offer: float, cited: Quote | None) -> tuple[Literal["accept", "ask", "walk"], float]:
        """Its answer to a counter: take it, name a new price, or hang up."""
        p, ask = self.provider, self.ask
        self.counters_heard += 1
        if offer >= p.reservation:
            return "accept", offer
        if p.style == "firm":
            self.final = True
            return "ask", ask
        if p.style == "walks_away" and offer < p.walk_below * ask:
            self.walked = True
            return "walk", ask
        if p.style == "matches":
            if cited is not None:
                target = all_in(cited) - extra(p.scope)
                if self.calls >= 2:  # heard it again on a callback: undercut, never below its floor
                    target = math.floor(target * (1 - BEAT_ON_CALLBACK))
                new = min(ask, math.ceil(max(p.reservation, target)))
            else:
                new = math.ceil(max(p.reservation, ask - 0.2 * (ask - offer)))
        elif p.style == "anchors_high" and self.counters_heard == 1:
            new = math.ceil(max(p.reservation, ask - 0.6 * (ask - offer)))
        else:
            new = math.ceil(max(p.reservation, (ask + offer) / 2))
        self.ask = float(min(ask, new))
        self.final = self.ask <= p.reservation
        return "ask", self.ask


Negotiator = Callable[[OfferFacts], Decision]


def seed_decide(facts: OfferFacts) -> Decision:
    """The seed's behaviour: accept the first price at or under max_price; above it, ask once for the maximum."""
    fee = extra(facts.scope)
    ask = facts.current_price
    ask_all_in = ask + fee
    if ask_all_in <= facts.max_price:
        return Decision(move=Move(action="accept", offer=ask, say=f"{money(ask)} works for me."), reason="seed",
                        ask_all_in=ask_all_in, offer_all_in=ask_all_in)
    if facts.counters_this_call == 0 and facts.max_price - fee > 0:
        offer = facts.max_price - fee
        return Decision(move=Move(action="counter", offer=offer, say=f"Could you do it for {money(offer)}?"),
                        reason="seed", ask_all_in=ask_all_in, offer_all_in=facts.max_price)
    return Decision(move=Move(action="decline", offer=None, say="Thank you, I will pass."), reason="seed",
                    ask_all_in=ask_all_in)


@dataclass
class Audit:
    """Hard-rule breaches seen in one job: both must stay 0."""

    overpays: int = 0  # an offer or acceptance whose all-in price is above max_price
    invented_leverage: int = 0  # a `say` with a number no provider of this job said, or a citation when off


@dataclass
class JobResult:
    seed: int
    strategy: Strategy
    paid: float | None  # best agreed all-in price
    calls: int
    rounds: int
    audit: Audit = field(default_factory=Audit)


@dataclass
class _Negotiation:
    """Our side's memory of one provider across calls."""

    their_prices: list[float] = field(default_factory=list)
    our_offers: list[float] = field(default_factory=list)
    cited: list[float] = field(default_factory=list)


def _audit_say(decision: Decision, facts: OfferFacts, known: list[Quote], cites: bool, audit: Audit) -> None:
    move = decision.move
    fee = extra(facts.scope)
    own = {facts.current_price, fee, *facts.their_prices}
    if move.offer is not None:
        own.add(move.offer)
    others = {n for q in known if q.provider_id != facts.provider_id for n in (q.price, extra(q.scope))}
    said = {float(m.replace(",", "")) for m in _NUMBER_RE.findall(move.say)}
    mentions_other = decision.competitor is not None or "another provider" in move.say.lower()
    invented = any(round(n, 2) not in {round(x, 2) for x in own | others} for n in said)
    if mentions_other and not cites:
        invented = True
    if decision.competitor is not None and decision.competitor not in known:
        invented = True
    if invented:
        audit.invented_leverage += 1
    offered = move.offer if move.action in ("counter", "accept") else None
    if offered is not None and offered + fee > facts.max_price + 1e-9:
        audit.overpays += 1


def _call(market: SimMarket, mind: Mind, memory: _Negotiation, known: list[Quote], decider: Negotiator,
          cites: bool, quote_seq: list[int], audit: Audit) -> tuple[list[Quote], bool]:
    """One call, the provider restating its current price first. Returns its quotes and whether it walked away."""
    p = mind.provider
    mind.calls += 1
    quotes: list[Quote] = []

    def stated(price: float, agreed: bool = False) -> None:
        quote_seq[0] += 1
        quotes.append(Quote(provider_id=p.provider_id, price=price, scope=p.scope, agreed=agreed, seq=quote_seq[0]))

    if not memory.their_prices or memory.their_prices[-1] != mind.ask:
        memory.their_prices.append(mind.ask)
    stated(mind.ask, agreed=mind.agreed == mind.ask)
    counters = 0
    for _ in range(MAX_TURNS):
        facts = OfferFacts(provider_id=p.provider_id, max_price=market.max_price,
                           their_prices=list(memory.their_prices), our_offers=list(memory.our_offers),
                           counters_this_call=counters, final=mind.final, scope=p.scope, job_quotes=known,
                           use_competing_quotes=cites, cited=list(memory.cited))
        decision = decider(facts)
        _audit_say(decision, facts, known, cites, audit)
        move = decision.move
        if move.action == "accept":
            mind.agreed = mind.ask
            stated(mind.ask, agreed=True)
            return quotes, False
        if move.action == "decline" or move.offer is None:
            return quotes, False
        counters += 1
        memory.our_offers.append(move.offer)
        if decision.competitor is not None:
            memory.cited.append(all_in(decision.competitor))
        answer, price = mind.respond(move.offer, decision.competitor)
        if answer == "accept":
            mind.ask = price
            mind.agreed = price
            stated(price, agreed=True)
            return quotes, False
        if answer == "walk":
            return quotes, True
        memory.their_prices.append(price)
        stated(price)
    return quotes, False


def run_job(market: SimMarket, strategy: Strategy, *, rounds: int = 2, max_concurrent_calls: int = 10,
            use_competing_quotes: bool = True) -> JobResult:
    """Negotiate one market with one strategy, from the first call to `job_complete`."""
    policy = MarketPolicy(strategy="independent" if strategy == "seed" else strategy, rounds=rounds,
                          max_concurrent_calls=max_concurrent_calls, use_competing_quotes=use_competing_quotes)
    decider: Negotiator = seed_decide if strategy == "seed" else decide
    cites = policy.cites_competitors
    minds = {p.provider_id: Mind(provider=p, ask=p.first_quote) for p in market.providers}
    memory = {p.provider_id: _Negotiation() for p in market.providers}
    progress = {p.provider_id: ProviderProgress(provider_id=p.provider_id) for p in market.providers}
    quotes: list[Quote] = []
    audit = Audit()
    seq = [0]
    calls = top_round = 0
    while True:
        state = MarketState(providers=list(progress.values()), quotes=list(quotes))
        batch: list[PlannedCall] = next_calls(state, policy)
        if not batch:
            if not job_complete(state, policy):
                raise RuntimeError(f"market {market.seed}: nothing planned, yet the job is not complete")
            break
        known = list(quotes)  # calls of one batch run at the same time: none hears another's quotes
        for planned in batch:
            calls += 1
            top_round = max(top_round, planned.round)
            shown = all_in(planned.competitor) if planned.competitor is not None else None
            got, walked = _call(market, minds[planned.provider_id], memory[planned.provider_id], known, decider,
                                cites, seq, audit)
            quotes.extend(got)
            before = progress[planned.provider_id]
            progress[planned.provider_id] = ProviderProgress(
                provider_id=planned.provider_id, status="closed" if walked else "done",
                rounds_called=planned.round, shown=shown if shown is not None else before.shown,
                highest_offer=max(memory[planned.provider_id].our_offers, default=None))
    agreed = [all_in(q) for q in quotes if q.agreed]
    paid = min(agreed) if agreed else None
    if paid is not None and paid > market.max_price + 1e-9:
        audit.overpays += 1
    return JobResult(seed=market.seed, strategy=strategy, paid=paid, calls=calls, rounds=top_round, audit=audit)


@dataclass(frozen=True)
class Summary:
    strategy: Strategy
    markets: int
    deal_rate: float
    price_vs_lowest_reservation: float  # mean paid / market's lowest all-in reservation, over deals
    saving_vs_best_first_quote: float  # mean (best first all-in quote - paid) / best first quote, over deals
    overpays: int
    invented_leverage: int
    calls_per_job: float


def summarise(strategy: Strategy, markets: list[SimMarket], results: list[JobResult]) -> Summary:
    by_seed = {m.seed: m for m in markets}
    deals = [r for r in results if r.paid is not None]
    ratio = [r.paid / by_seed[r.seed].lowest_reservation for r in deals if r.paid is not None]
    saving = [(by_seed[r.seed].best_first_quote - r.paid) / by_seed[r.seed].best_first_quote
              for r in deals if r.paid is not None]
    return Summary(
        strategy=strategy,
        markets=len(results),
        deal_rate=len(deals) / len(results) if results else 0.0,
        price_vs_lowest_reservation=sum(ratio) / len(ratio) if ratio else math.nan,
        saving_vs_best_first_quote=sum(saving) / len(saving) if saving else math.nan,
        overpays=sum(r.audit.overpays for r in results),
        invented_leverage=sum(r.audit.invented_leverage for r in results),
        calls_per_job=sum(r.calls for r in results) / len(results) if results else 0.0,
    )


@dataclass(frozen=True)
class Paired:
    """Market by market, one strategy's price paid against another's (where both made a deal)."""

    strategy: Strategy
    against: Strategy
    lower: int
    same: int
    higher: int


def paired(results: dict[Strategy, list[JobResult]], strategy: Strategy, against: Strategy) -> Paired:
    lower = same = higher = 0
    for mine, theirs in zip(results[strategy], results[against], strict=True):
        if mine.paid is None or theirs.paid is None:
            continue
        if abs(mine.paid - theirs.paid) < 0.005:
            same += 1
        elif mine.paid < theirs.paid:
            lower += 1
        else:
            higher += 1
    return Paired(strategy=strategy, against=against, lower=lower, same=same, higher=higher)


def run_all(seeds: range, *, rounds: int = 2, max_concurrent_calls: int = 10, use_competing_quotes: bool = True
            ) -> tuple[list[SimMarket], dict[Strategy, list[JobResult]]]:
    """Every strategy on the same seeded markets."""
    markets = [make_market(s) for s in seeds]
    results = {strategy: [run_job(m, strategy, rounds=rounds, max_concurrent_calls=max_concurrent_calls,
                                  use_competing_quotes=use_competing_quotes)
                          for m in markets] for strategy in STRATEGIES}
    return markets, results


def evaluate(seeds: range, *, rounds: int = 2, max_concurrent_calls: int = 10,
             use_competing_quotes: bool = True) -> list[Summary]:
    markets, results = run_all(seeds, rounds=rounds, max_concurrent_calls=max_concurrent_calls,
                               use_competing_quotes=use_competing_quotes)
    return [summarise(strategy, markets, results[strategy]) for strategy in STRATEGIES]
