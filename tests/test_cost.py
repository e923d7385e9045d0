"""Costs that add up, through the real services: the Twilio stand-in prices calls (and, like Twilio, answers
`price: null` right after a call ends), the call-cost consumer reads them with the official SDK and publishes one
`CallPriced` per call, the projector folds them, and the job document and CSV show per-call, per-provider and
per-job costs and the cost per agreed dollar saved."""

from __future__ import annotations

import asyncio
import csv
import io
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from haggle_contracts import events as ev
from haggle_dispatcher.call_cost import CallCharge, parse_price, priced_event
from haggle_sim.personas import demo_personas
from waits import ACCEPTED, JobWatch, job_body, running_world, settled

from haggle.config import Settings

RATE = 0.05  # REALTIME_PRICE_PER_MINUTE
TWILIO_RATE = Decimal("0.0140")


def test_twilio_price_strings() -> None:
    assert parse_price("-0.01400") == Decimal("0.01400")  # Twilio shows a charge as a debit
    assert parse_price("0.5") == Decimal("0.5")
    assert parse_price(None) is None and parse_price("") is None and parse_price("n/a") is None


def test_priced_event_adds_its_parts() -> None:
    status = ev.CallStatusChanged(event_id="s", job_id="j", provider_id="p", attempt=2, call_sid="CAx",
                                  status="completed", duration_s=10.0)
    charge = CallCharge("completed", Decimal("0.028"), "usd", 90.0)
    priced = priced_event(status, charge, realtime_price_per_minute=RATE)
    assert priced.event_id == "priced-CAx" and priced.currency == "USD" and priced.attempt == 2
    assert priced.realtime_minutes == 1.5 and priced.realtime_cost == 0.075
    assert priced.twilio_price == 0.028 and priced.total == pytest.approx(0.103)
    missing = priced_event(status, None, realtime_price_per_minute=RATE, missing="Twilio could not be read")
    assert missing.twilio_price is None and missing.twilio_price_missing == "Twilio could not be read"
    assert missing.total == missing.realtime_cost == round(10 / 60 * RATE, 4)  # the status's duration


@pytest.mark.slow
async def test_costs_add_up_per_call_provider_and_job(nc, nats_server, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'cost.db'}", calling_hours=None,
                        port=0, realtime_price_per_minute=RATE)
    personas = list(demo_personas(ms_per_char=12))
    unpriced = next(p for p in personas if p.business == "Drip Masters")
    async with running_world(settings, demo_personas(ms_per_char=12), nats_server.url,
                             dispatcher={"price_reads": 3, "price_reread_s": 0.2}) as (world, system):
        twilio = world.twilio
        twilio.api.pricing.per_minute = TWILIO_RATE  # type: ignore[attr-defined]
        twilio.api.pricing.null_reads = 1  # type: ignore[attr-defined]
        twilio.api.pricing.never_priced = {unpriced.phone}  # type: ignore[attr-defined]

        def all_priced() -> dict[str, ev.CallPriced] | None:
            priced = {e.call_sid: e for e in watch.seen if isinstance(e, ev.CallPriced)}
            return priced if len(priced) == len(personas) else None

        async with JobWatch(nc, "cost1") as watch, httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
            assert (await http.post("/jobs", json=job_body("cost1", personas, ids="c"))).status_code in ACCEPTED
            await watch.wait_for(all_priced, 90)
            await settled(system.base_url, "cost1", timeout_s=20)

            async def costed() -> dict:  # type: ignore[type-arg]
                while True:  # the projection trails the log: until it holds every CallPriced
                    doc = (await http.get("/jobs/cost1")).json()
                    if doc["cost"]["calls_priced"] == len(personas):
                        return doc  # type: ignore[no-any-return]
                    await asyncio.sleep(0.1)

            doc = await asyncio.wait_for(costed(), 20)
            csv_text = (await http.get("/jobs/cost1/results.csv")).text
    calls = {c.sid: c for c in twilio.calls}  # type: ignore[attr-defined]
    priced = {e.call_sid: e for e in watch.seen if isinstance(e, ev.CallPriced)}

    # Per call: Twilio's part is exactly what the stand-in charged (read after its first `null` answer), the
    # realtime part is the answered minutes at the operator's rate, and the two add up.
    for sid, event in priced.items():
        call = calls[sid]
        assert call.price_fetches >= 2, "the pricer read again after Twilio's `price: null`"
        assert event.billed_duration_s == call.duration
        assert event.realtime_cost == round(call.duration / 60 * RATE, 4)
        if call.to == unpriced.phone:
            assert event.twilio_price is None and event.twilio_price_missing == "still null after 3 reads"
            assert event.total == event.realtime_cost
        else:
            assert Decimal(str(event.twilio_price)) == call.price == TWILIO_RATE * -(-call.duration // 60)
            assert event.total == round(event.twilio_price + event.realtime_cost, 4)
        assert event.total > 0

    # Per provider and per job, in the document the API answers.
    by_sid = {e.call_sid: e for e in priced.values()}
    for p in doc["providers"]:
        assert [c["call_sid"] for c in p["costs"]] == [p["call_sid"]]
        assert p["cost"] == pytest.approx(by_sid[p["call_sid"]].total)
    total = sum(e.total for e in priced.values())
    assert doc["cost"]["total"] == pytest.approx(total)
    assert doc["cost"]["twilio_price_missing"] == 1
    assert doc["best_offer"]["saving"] == 25 and doc["cost"]["dollars_saved"] == 25
    assert doc["cost"]["per_dollar_saved"] == pytest.approx(total / 25)

    # And in the CSV export, one cost per provider line.
    lines = list(csv.DictReader(io.StringIO(csv_text)))
    assert sum(float(r["cost"]) for r in lines) == pytest.approx(total)
