"""One call's side of the offer policy: `record_quote` in, the next move out.

The model calls `record_quote` whenever the business states or changes a price. This keeps what the call has
heard and offered so far, on top of what the call context brings from earlier calls and the rest of the job (the
round, the real competing quote, this provider's earlier prices and our earlier offers), builds the policy's
`OfferFacts`, and asks `offer_policy.decide` for the move. The tool's output is that move,
`{"action", "offer", "say"}`, and the decision with all its inputs is published as `OfferDecided`, so the replay
explains every number the agent put to the business (docs/negotiation.md).

On a booking call there is nothing to negotiate: the price was agreed, and the tool only records what was said.
"""

from __future__ import annotations

import logging
from typing import Any

from haggle_contracts import events as ev
from haggle_contracts.calls import CallContext
from haggle_contracts.offer_policy import InvalidFacts, OfferFacts, decide
from haggle_contracts.scope import Scope, all_in

from .tools import quote_event

log = logging.getLogger(__name__)

_SCOPE_FIELDS = ("visit_fee", "includes_parts", "warranty", "earliest_availability")


class CallNegotiation:
    def __init__(self, ctx: CallContext, call_sid: str, *, use_competing_quotes: bool = True) -> None:
        self.ctx = ctx
        self.call_sid = call_sid
        self.use_competing_quotes = use_competing_quotes
        self.their_prices: list[float] = list(ctx.their_prices)
        self.our_offers: list[float] = list(ctx.our_offers)
        self.cited: list[float] = list(ctx.cited)
        self.counters = 0
        self.scope: dict[str, Any] = {}  # what the business said its price covers, as said so far in this call

    def on_quote(self, tool_call_id: str, args: dict[str, Any]) -> tuple[list[ev.Event], dict[str, Any]]:
        """The events to publish for one `record_quote` call, and the tool's output (the next move)."""
        quote = quote_event(self.ctx, self.call_sid, tool_call_id, args)
        if self.ctx.booking is not None or quote.price is None:
            return [quote], {"ok": True}
        if quote.agreed:
            # The deal the last move accepted, being recorded: nothing left to decide. An agreement above the
            # maximum is never one the policy made; say so rather than let it stand unremarked.
            if quote.price + (quote.visit_fee or self.scope.get("visit_fee") or 0.0) > self.ctx.max_price:
                return [quote], {"ok": False, "error": "that is above the homeowner's maximum: do not agree to it"}
            return [quote], {"ok": True}
        for name in _SCOPE_FIELDS:
            value = getattr(quote, name)
            if value is not None:
                self.scope[name] = value
        if not self.their_prices or self.their_prices[-1] != quote.price:
            self.their_prices.append(quote.price)
        facts = OfferFacts(
            provider_id=self.ctx.provider_id,
            max_price=self.ctx.max_price,
            their_prices=list(self.their_prices),
            our_offers=list(self.our_offers),
            counters_this_call=self.counters,
            final=quote.final,
            scope=Scope(price_type=quote.price_type.value, **self.scope),
            job_quotes=[self.ctx.competitor] if self.ctx.competitor is not None else [],
            use_competing_quotes=self.use_competing_quotes,
            cited=list(self.cited),
        )
        try:
            decision = decide(facts)
        except InvalidFacts as exc:  # cannot happen with a parsed price; never fail the tool call over it
            log.warning("call %s: offer policy refused the facts: %s", self.call_sid, exc)
            return [quote], {"ok": True}
        move = decision.move
        if move.action == "counter" and move.offer is not None:
            self.counters += 1
            self.our_offers.append(move.offer)
        if decision.competitor is not None:
            self.cited.append(all_in(decision.competitor))
        decided = ev.OfferDecided(
            event_id=f"offer-{self.call_sid}-{tool_call_id}",
            job_id=self.ctx.job_id,
            provider_id=self.ctx.provider_id,
            attempt=self.ctx.attempt,
            call_sid=self.call_sid,
            action=move.action,
            round=self.ctx.round,
            offer=move.offer,
            say=move.say,
            reason=decision.reason,
            facts=facts,
            decision=decision,
        )
        return [quote, decided], {"action": move.action, "offer": move.offer, "say": move.say}
