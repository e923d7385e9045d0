"""Comparable scope: what a quote includes, its all-in price, and which quotes can stand in for each other.

A headline price means little alone: "$150" plus a $79 call-out fee and no parts is not the same job as "$199
all-in with parts and a 90-day warranty". `record_quote` carries the optional scope fields (`visit_fee`,
`includes_parts`, `warranty`, `earliest_availability`); this module turns them into one all-in number to rank
on, and into the comparability test that decides whether one provider's quote may be put to another as leverage.

Unknown is not different: a field nobody mentioned never makes two quotes incomparable, because a rule that
needed every field would leave the agent no leverage on a real call, where most of them go unsaid. A field that
is known on both sides and shows the competitor covering less (no parts, a shorter warranty) does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import date
from typing import Annotated

import msgspec

Money = Annotated[float, msgspec.Meta(ge=0)]

# Price types (events.PriceType values) a single all-in figure can describe. An hourly rate or a visit fee alone
# is not the price of the job, so it ranks after every whole-job price and is never leverage for one.
WHOLE_JOB_TYPES = frozenset({"flat", "unknown"})

_WARRANTY_RE = re.compile(r"(\d+(?:\.\d+)?)\s*-?\s*(day|week|month|year|yr|mo)s?\b", re.IGNORECASE)
_NO_WARRANTY_RE = re.compile(r"^\s*(none|no( warranty)?|n/?a|0)\s*$", re.IGNORECASE)
_DAYS_PER_UNIT = {"day": 1, "week": 7, "month": 30, "mo": 30, "year": 365, "yr": 365}


class Scope(msgspec.Struct, kw_only=True, frozen=True):
    """What a quoted price covers; None means nobody said."""

    price_type: str = "unknown"  # events.PriceType value
    visit_fee: Money | None = None  # call-out or diagnostic fee charged on top of the price
    includes_parts: bool | None = None
    warranty: str | None = None  # as said: "90 days", "1 year", "none"
    earliest_availability: str | None = None  # ISO date (YYYY-MM-DD...) when known; free text is kept but not ranked


class Quote(msgspec.Struct, kw_only=True, frozen=True):
    """A price one provider of the job really stated (a `record_quote` call), with its scope."""

    provider_id: str
    price: Money
    scope: Scope = Scope()
    agreed: bool = False
    seq: int = 0  # order within the job (stream sequence); the latest quote of a provider is its standing one


def extra(scope: Scope) -> float:
    """What is paid on top of the headline price."""
    return scope.visit_fee or 0.0


def all_in(quote: Quote) -> float:
    return round(quote.price + extra(quote.scope), 2)


def whole_job(scope: Scope) -> bool:
    return scope.price_type in WHOLE_JOB_TYPES


def warranty_days(text: str | None) -> int | None:
    """Days of warranty from what was said ("90 days", "1 year", "six months" is not parsed: None), 0 for none."""
    if text is None:
        return None
    if _NO_WARRANTY_RE.match(text):
        return 0
    match = _WARRANTY_RE.search(text)
    if match is None:
        return None
    return int(float(match.group(1)) * _DAYS_PER_UNIT[match.group(2).lower()])


def availability_date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def comparable(ours: Scope, theirs: Scope) -> bool:
    """Whether a quote with scope `theirs` may be cited against one with scope `ours` as the same job.

    Not when either is not a whole-job price, when `theirs` is known to leave parts out while `ours` includes
    them, or when its warranty is known to be shorter. Availability never breaks comparability (same job, other
    day); it only breaks ties in `rank`.
    """
    if not (whole_job(ours) and whole_job(theirs)):
        return False
    if ours.includes_parts is True and theirs.includes_parts is False:
        return False
    our_days, their_days = warranty_days(ours.warranty), warranty_days(theirs.warranty)
    return not (our_days is not None and their_days is not None and their_days < our_days)


def _rank_key(quote: Quote) -> tuple[bool, float, bool, date, str]:
    day = availability_date(quote.scope.earliest_availability)
    return (not whole_job(quote.scope), all_in(quote), day is None, day or date.max, quote.provider_id)


def rank(quotes: Iterable[Quote]) -> list[Quote]:
    """Best first: whole-job prices by all-in price, then earliest known availability, then provider id."""
    return sorted(quotes, key=_rank_key)


def standing_quotes(quotes: Iterable[Quote]) -> list[Quote]:
    """Each provider's standing quote: its latest agreed price if it agreed to one, else the latest it stated."""
    latest: dict[str, Quote] = {}
    agreed: dict[str, Quote] = {}
    for quote in sorted(quotes, key=lambda q: q.seq):
        if not math.isfinite(quote.price):
            continue
        latest[quote.provider_id] = quote
        if quote.agreed:
            agreed[quote.provider_id] = quote
    return [agreed.get(pid, q) for pid, q in latest.items()]


def best_comparable(quotes: Iterable[Quote], provider_id: str, ours: Scope) -> Quote | None:
    """The lowest all-in standing quote of another provider of the job that is comparable to `ours`."""
    candidates = [q for q in standing_quotes(quotes) if q.provider_id != provider_id and comparable(ours, q.scope)]
    ranked = rank(candidates)
    return ranked[0] if ranked else None


def best_offer(quotes: Iterable[Quote]) -> Quote | None:
    """The job's best agreed whole-job offer on the all-in price (what the job document should name)."""
    ranked = rank(q for q in standing_quotes(quotes) if q.agreed and whole_job(q.scope))
    return ranked[0] if ranked else None
