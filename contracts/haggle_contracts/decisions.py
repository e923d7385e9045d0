"""Decisions beside the fold: functions of folded job state that return the next events to publish.

The fold (`state.py`) says where each provider stands; these functions say what happens next, so every
service that acts on a job decides with the same rules over the same folded log:

- `next_dial(state, ...)`: the next attempt of a provider's current round (a retry), or None;
- `plan_calls(history, policy, ...)`: the market strategy's next calls (`market.next_calls`) as `CallPlanned`
  events, each with the `DialScheduled` that places it;
- `completion(history, policy)`: the job's `JobCompleted`, once no provider is still being called and (in
  `market`) no further round could improve the best all-in price.

All of them are pure: no I/O, no clock (the caller passes `now`), no randomness.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from . import events as ev
from . import ids
from . import state as st
from .market import MarketPolicy, MarketState, ProviderProgress, Status, job_complete, next_calls
from .scope import Quote, Scope, all_in


def retry_delay(base_s: float, attempt: int) -> float:
    """Wait before dial `attempt + 1`: the base after the first try, doubling after each further one."""
    return base_s * (2 ** max(0, attempt - 1))


def _next_attempt_dial(state: st.ProviderState, *, reason: str, max_attempts: int, round: int,
                       not_before: datetime | None = None) -> ev.DialScheduled:
    """The provider's next attempt, with the id every replica derives for it (so a repeat is one event)."""
    attempt = state.attempts + 1
    return ev.DialScheduled(
        event_id=ids.dial_event_id(state.job_id, state.id, attempt),
        job_id=state.job_id,
        provider_id=state.id,
        attempt=attempt,
        not_before=not_before,
        reason=reason,
        max_attempts=max_attempts,
        round=round,
    )


def next_dial(state: st.ProviderState, *, retry_delay_s: float, now: datetime) -> ev.DialScheduled | None:
    """The retry the fold left this provider queued for, or None.

    The fold keeps a provider `queued` after a busy / no-answer / voicemail attempt only while `should_retry`
    allows another one in the current round (and the job is not cancelled); that is the whole rule.
    """
    if state.call_status != st.QUEUED or state.attempts == 0 or state.cancelled:
        return None
    if not st.should_retry(state, state.outcome):
        return None
    return _next_attempt_dial(
        state,
        not_before=now + timedelta(seconds=retry_delay(retry_delay_s, state.attempts)),
        reason=state.outcome or "retry",
        max_attempts=state.max_attempts,
        round=state.round,
    )


def booking_dial(state: st.ProviderState, *, attempts_per_round: int) -> ev.DialScheduled | None:
    """The call that confirms a booking: a new round for the provider, once its last call has ended.

    None when the request is stale (the fold has moved on: it was confirmed, failed or superseded).
    """
    if state.booking_status != st.REQUESTED or not state.terminal or state.cancelled:
        return None
    return _next_attempt_dial(
        state,
        reason="booking",
        max_attempts=state.attempts + attempts_per_round,
        round=max(state.booking_round, state.round + 1),
    )


# ---- the market ------------------------------------------------------------------------------------------------

_DONE_OUTCOMES = frozenset({ev.Outcome.AGREED.value, ev.Outcome.NO_AGREEMENT.value})


def quote_of(event: ev.QuoteRecorded | ev.PriceExtracted, seq: int) -> Quote | None:
    """A price the provider really stated (a `record_quote` call, or the price the extractor found agreed)."""
    if event.price is None:
        return None
    if isinstance(event, ev.PriceExtracted) and not event.agreed:
        return None
    scope = Scope(price_type=event.price_type.value, visit_fee=event.visit_fee, includes_parts=event.includes_parts,
                  warranty=event.warranty, earliest_availability=event.earliest_availability)
    return Quote(provider_id=event.provider_id, price=event.price, scope=scope, agreed=bool(event.agreed), seq=seq)


class ProviderMarket(msgspec.Struct, kw_only=True):
    """What the log says about one provider's negotiation across calls (the inputs a call's OfferFacts need)."""

    planned_round: int = 0
    shown: float | None = None  # the competing all-in price its latest planned call carried
    their_prices: list[float] = msgspec.field(default_factory=list)  # every price it stated, oldest first
    our_offers: list[float] = msgspec.field(default_factory=list)  # every counter we made to it, oldest first
    cited: list[float] = msgspec.field(default_factory=list)  # competing all-in prices put to it


def fold_market(history: list[ev.Event]) -> tuple[dict[str, ProviderMarket], list[Quote]]:
    """Per provider: planned rounds, prices it stated and offers we made; and every real quote of the job."""
    providers: dict[str, ProviderMarket] = {}
    quotes: list[Quote] = []
    for seq, event in enumerate(history):
        if isinstance(event, ev.JobStarted):
            for spec in event.providers:
                providers.setdefault(spec.id, ProviderMarket())
            continue
        if not isinstance(event, ev.CallPlanned | ev.QuoteRecorded | ev.PriceExtracted | ev.OfferDecided):
            continue
        mine = providers.setdefault(event.provider_id, ProviderMarket())
        match event:
            case ev.CallPlanned():
                if event.round >= mine.planned_round:
                    mine.planned_round, mine.shown = event.round, event.shown
            case ev.QuoteRecorded() | ev.PriceExtracted():
                quote = quote_of(event, seq)
                if quote is not None:
                    quotes.append(quote)
                    said = mine.their_prices
                    if isinstance(event, ev.QuoteRecorded) and (not said or said[-1] != event.price):
                        said.append(event.price)  # type: ignore[arg-type]  # a price restated is not a new one
            case ev.OfferDecided():
                if event.action == "counter" and event.offer is not None:
                    mine.our_offers.append(event.offer)
                if event.decision is not None and event.decision.competitor is not None:
                    mine.cited.append(all_in(event.decision.competitor))
    return providers, quotes


def _status(state: st.ProviderState, planned_round: int) -> Status:
    if state.cancelled and state.terminal:
        return "closed"
    if planned_round == 0 and state.attempts > 0:
        planned_round = state.round  # dialed without a plan (an `independent` dispatcher): that call counts
    if planned_round == 0:
        return "waiting"
    if state.round < planned_round or not state.terminal:
        return "calling"
    return "done" if state.outcome in _DONE_OUTCOMES else "closed"


def market_state(history: list[ev.Event], states: dict[str, st.ProviderState] | None = None) -> MarketState:
    """The job's history folded into the inputs of `market.next_calls` / `market.job_complete`."""
    states = st.fold_job(history) if states is None else states
    providers, quotes = fold_market(history)
    progress = []
    for pid, state in states.items():
        mine = providers.get(pid, ProviderMarket())
        progress.append(ProviderProgress(
            provider_id=pid,
            status=_status(state, mine.planned_round),
            rounds_called=max(mine.planned_round, state.round if state.attempts > 0 else 0),
            shown=mine.shown,
            highest_offer=max(mine.our_offers) if mine.our_offers else None,
        ))
    return MarketState(providers=progress, quotes=quotes)


class PlannedDial(msgspec.Struct, kw_only=True, frozen=True):
    """A planned call and the dial that places it."""

    planned: ev.CallPlanned
    dial: ev.DialScheduled


def plan_calls(history: list[ev.Event], policy: MarketPolicy, *, attempts_per_round: int) -> list[PlannedDial]:
    """The calls the market strategy places now: none once the job is cancelled; once it completed, only first
    calls to providers a re-start added (no more callback rounds)."""
    if not history or any(isinstance(e, ev.JobCancelled) for e in history):
        return []
    completed = any(isinstance(e, ev.JobCompleted) for e in history)
    job_id = history[0].job_id
    states = st.fold_job(history)
    market = market_state(history, states)
    waiting = {p.provider_id for p in market.providers if p.status == "waiting"}
    out = []
    for call in next_calls(market, policy):
        if completed and call.provider_id not in waiting:
            continue
        state = states[call.provider_id]
        attempt = state.attempts + 1
        planned = ev.CallPlanned(
            event_id=ids.plan_event_id(job_id, call.provider_id, call.round),
            job_id=job_id,
            provider_id=call.provider_id,
            round=call.round,
            reason=call.reason,
            competitor=call.competitor,
            shown=all_in(call.competitor) if call.competitor is not None else None,
            strategy=policy.strategy,
        )
        dial = ev.DialScheduled(
            event_id=ids.dial_event_id(job_id, call.provider_id, attempt),
            job_id=job_id,
            provider_id=call.provider_id,
            attempt=attempt,
            reason="callback" if call.round > 1 else "initial",
            max_attempts=state.attempts + attempts_per_round,
            round=call.round,
        )
        out.append(PlannedDial(planned=planned, dial=dial))
    return out


def completion(history: list[ev.Event], policy: MarketPolicy) -> ev.JobCompleted | None:
    """The job's JobCompleted once every provider is settled and, in `market`, no further round can improve the
    best all-in price; None otherwise (or when it was already published)."""
    if not history or any(isinstance(e, ev.JobCompleted) for e in history):
        return None
    states = st.fold_job(history)
    if not st.job_settled(states):
        return None
    cancelled = any(isinstance(e, ev.JobCancelled) for e in history)
    if policy.cites_competitors and not cancelled and not job_complete(market_state(history, states), policy):
        return None
    offers = st.rank_offers(list(states.values()))
    best = next((o for o in offers if o.outcome == ev.Outcome.AGREED and o.price is not None), None)
    return ev.JobCompleted(
        event_id=ids.job_completed_event_id(history[0].job_id),
        job_id=history[0].job_id,
        offers=offers,
        best_provider_id=best.provider_id if best else None,
        best_price=best.price if best else None,
    )
