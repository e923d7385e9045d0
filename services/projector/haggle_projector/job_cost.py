"""What a job cost, from its providers' priced calls: the total, and the cost per agreed dollar saved.

A dollar saved is the best agreed offer's saving on that provider's own first quote (the saving the job page
names); the cost per dollar saved is the whole job's cost (every call, agreed or not) over that saving, so
it says what each dollar the negotiation won cost in calls. None when nothing was saved.
"""

from __future__ import annotations

from typing import Any

from haggle_contracts import state as st
from haggle_contracts.events import Outcome


def call_costs(s: st.ProviderState) -> list[dict[str, Any]]:
    return [{"attempt": c.attempt, "call_sid": c.call_sid, "currency": c.currency, "twilio_price": c.twilio_price,
             "realtime_cost": c.realtime_cost, "total": c.total} for c in s.costs]


def job_cost(rows: list[st.ProviderState]) -> dict[str, Any]:
    priced = [c for r in rows for c in r.costs]
    total = round(sum(c.total for c in priced), 6)
    offers = st.rank_offers(rows)
    best = next((o for o in offers if o.outcome == Outcome.AGREED and o.price is not None), None)
    saved = best.saving if best is not None and best.saving else None
    currencies = sorted({c.currency for c in priced}) or ["USD"]
    return {
        "total": total,
        "currency": "/".join(currencies),
        "calls_priced": len(priced),
        "twilio_price_missing": sum(1 for c in priced if c.twilio_price is None),
        "dollars_saved": saved,
        "per_dollar_saved": round(total / saved, 6) if saved else None,
    }
