"""What the model's function tools turn into. The model's arguments are untrusted JSON."""

from __future__ import annotations

import math
from typing import Any

from haggle_contracts import events as ev
from haggle_contracts.calls import CallContext

_PRICE_TYPES = frozenset(ev.PriceType)


def quote_event(ctx: CallContext, call_sid: str, tool_call_id: str, args: dict[str, Any]) -> ev.QuoteRecorded:
    """Anything that is not a finite, non-negative number, a known price type, a string or a boolean is recorded
    as unknown rather than failing the tool call."""
    raw_type = args.get("price_type")
    price_type = ev.PriceType(raw_type) if isinstance(raw_type, str) and raw_type in _PRICE_TYPES else \
        ev.PriceType.UNKNOWN
    conditions = args.get("conditions")
    agreed = args.get("agreed")
    return ev.QuoteRecorded(
        event_id=f"quote-{call_sid}-{tool_call_id}",
        job_id=ctx.job_id,
        provider_id=ctx.provider_id,
        attempt=ctx.attempt,
        call_sid=call_sid,
        price=price(args.get("price")),
        price_type=price_type,
        conditions=conditions[:500] if isinstance(conditions, str) else "",
        agreed=agreed if isinstance(agreed, bool) else None,
    )


def price(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        amount = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return amount if math.isfinite(amount) and amount >= 0 else None
