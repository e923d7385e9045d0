"""What the model's function tools turn into. The model's arguments are untrusted JSON."""

from __future__ import annotations

import math
from typing import Any

from haggle_contracts import events as ev
from haggle_contracts import ids
from haggle_contracts.calls import CallContext

from .contexts import about_call

_PRICE_TYPES = frozenset(ev.PriceType)


def quote_event(ctx: CallContext, call_sid: str, tool_call_id: str, args: dict[str, Any]) -> ev.QuoteRecorded:
    """Anything that is not a finite, non-negative number, a known price type, a string or a boolean is recorded
    as unknown rather than failing the tool call."""
    raw_type = args.get("price_type")
    price_type = ev.PriceType(raw_type) if isinstance(raw_type, str) and raw_type in _PRICE_TYPES else \
        ev.PriceType.UNKNOWN
    conditions = args.get("conditions")
    agreed = args.get("agreed")
    parts = args.get("includes_parts")
    return ev.QuoteRecorded(
        **about_call(ctx, call_sid),
        event_id=ids.quote_event_id(call_sid, tool_call_id),
        price=price(args.get("price")),
        price_type=price_type,
        conditions=conditions[:500] if isinstance(conditions, str) else "",
        agreed=agreed if isinstance(agreed, bool) else None,
        visit_fee=price(args.get("visit_fee")),
        includes_parts=parts if isinstance(parts, bool) else None,
        warranty=_short(args.get("warranty")),
        earliest_availability=_short(args.get("earliest_availability")),
        final=args.get("final") is True,
    )


def booking_event(ctx: CallContext, call_sid: str, tool_call_id: str, args: dict[str, Any]) -> ev.BookingRecorded:
    """`record_booking`: only an explicit `confirmed: true` confirms; the appointment is kept as said."""
    notes = args.get("notes")
    return ev.BookingRecorded(
        event_id=f"booking-{call_sid}-{tool_call_id}",
        job_id=ctx.job_id,
        provider_id=ctx.provider_id,
        attempt=ctx.attempt,
        call_sid=call_sid,
        confirmed=args.get("confirmed") is True,
        appointment=_short(args.get("appointment")),
        price=price(args.get("price")),
        notes=notes[:500] if isinstance(notes, str) else "",
    )


def _short(value: object, limit: int = 200) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:limit]


def price(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        amount = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return amount if math.isfinite(amount) and amount >= 0 else None
