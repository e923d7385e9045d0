"""The market strategy end to end through the real services (dispatcher, gateway, extractor, completion,
projector) and the Twilio and realtime stand-ins: a three-provider job staggers its first round, later calls
carry a real earlier quote, and a second round calls back the providers above the best with the best real
offer and improves a price. Each step shows in the job document and in `haggle events replay --job`."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from haggle_contracts import decisions, fanout, subjects
from haggle_contracts import events as ev
from haggle_contracts.calls import decode_context
from haggle_sim.personas import Persona, PersonaBook, callback, follow_policy
from waits import ACCEPTED, job_body, kv_entries, running_world, settled, wait_job_completed

from haggle import bus
from haggle.config import Settings

HAGGLE = str(Path(sys.executable).parent / "haggle")


def personas() -> list[Persona]:
    # The agent follows the offer policy (`{say}`). Joe's opens alone (no price known yet): 200, counter $160,
    # "180 is my best", agreed. Bay and Drip are then called together, both carrying Joe's agreed $180, which the
    # policy puts to them: Bay agrees 175, Drip 200. Round 2 calls back Joe's and Drip with Bay's $175: Joe's keeps
    # 180, Drip beats it with 150. Bay is not called back with 150: our offer to it ($162) is already above that.
    return [
        replace(follow_policy("Joe's Plumbing", "+14155550201", first_quote=200, final=180, ms_per_char=8,
                              includes_parts=True, warranty="90 days", earliest_availability="2026-01-10"),
                callbacks=(callback(standing=180, answer=None),)),
        replace(follow_policy("Bay Pipe Pros", "+14155550202", first_quote=225, final=175, ms_per_char=8),
                callbacks=(callback(standing=175, answer=None),)),
        replace(follow_policy("Drip Masters", "+14155550203", first_quote=250, final=200, ms_per_char=8),
                callbacks=(callback(standing=200, answer=150),)),
    ]


@pytest.mark.slow
async def test_market_rounds_end_to_end(nc, nats_server, tmp_path: Path) -> None:
    cast = personas()
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'm.db'}", calling_hours=None,
                        port=0, negotiation_strategy="market", negotiation_rounds=2)
    async with running_world(settings, PersonaBook(cast), nats_server.url) as (world, system):
        async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
            body = job_body("mkt", cast, ids="p", max_price=250)
            assert (await http.post("/jobs", json=body)).status_code in ACCEPTED
        await wait_job_completed(nc, "mkt", timeout=120)
        doc = await settled(system.base_url, "mkt", timeout_s=20)
        contexts = [decode_context(v) for v in (await kv_entries(nc.jetstream(), subjects.KV_CALLS)).values()]
    dialed = [c.params["To"][0] for c in world.twilio.calls]  # type: ignore[attr-defined]

    history = await bus.job_history(nc.jetstream(), "mkt")
    kinds = [(type(e).__name__, fanout.provider_of(e)) for e in history]
    plans = [e for e in history if isinstance(e, ev.CallPlanned)]
    assert [(p.provider_id, p.round, p.reason) for p in plans] == [
        ("p0", 1, "opening"), ("p1", 1, "informed"), ("p2", 1, "informed"), ("p0", 2, "callback"),
        ("p2", 2, "callback")]
    # Staggered: the others are planned only after the opening call produced a real price: the agent's
    # record_quote during the call or the extractor's price after it, whichever the dispatcher sees first (the call's
    # end and the extraction race, so either may come first).
    first_quote = next(i for i, e in enumerate(history) if isinstance(e, (ev.QuoteRecorded, ev.PriceExtracted))
                       and e.provider_id == "p0" and decisions.quote_of(e, i) is not None)
    assert first_quote < kinds.index(("CallPlanned", "p1"))
    # Later calls carry a real earlier quote: what Joe's really agreed, in the event and in the call context...
    for plan in plans[1:3]:
        assert plan.competitor is not None and (plan.competitor.provider_id, plan.competitor.price,
                                                plan.competitor.agreed) == ("p0", 180, True)
    by_call = {(c.provider_id, c.round): c for c in contexts}
    assert by_call[("p1", 1)].competitor is not None and by_call[("p1", 1)].competitor.price == 180
    assert by_call[("p0", 1)].competitor is None
    # ... and the policy uses it: the move cites it, and the agent says it on the call.
    decided = [e for e in history if isinstance(e, ev.OfferDecided)]
    bay_first = next(e for e in decided if e.provider_id == "p1")
    assert bay_first.decision is not None and bay_first.decision.competitor is not None
    assert (bay_first.action, bay_first.offer, bay_first.reason) == ("counter", 162, "counter_with_competitor")
    cited = "Another provider agreed to do comparable work for $180. Could you do it for $162?"
    assert bay_first.say == cited
    assert cited in said(history, "p1", attempt=1)
    assert "Another provider" not in said(history, "p0", attempt=1)  # the opening call had nothing real to cite
    # Round 2 carries the round's best real offer (Bay's 175), with what Drip said and heard before.
    drip = by_call[("p2", 2)]
    assert drip.competitor is not None and (drip.competitor.provider_id, drip.competitor.price) == ("p1", 175)
    assert (drip.their_prices, drip.our_offers, drip.cited) == ([250, 200], [162], [180])
    assert "It's about the leaking kitchen faucet I called about earlier." in said(history, "p2", attempt=2)
    assert "Another provider agreed to do comparable work for $175." in said(history, "p2", attempt=2)
    drip_moves = [(e.action, e.offer) for e in decided if e.provider_id == "p2" and e.round == 2]
    assert drip_moves == [("counter", 162), ("accept", 150)]
    assert sorted(dialed) == sorted([cast[0].phone, cast[0].phone, cast[1].phone, cast[2].phone, cast[2].phone])
    assert all(e.round == 2 for e in history if isinstance(e, ev.DialScheduled) and e.attempt == 2)
    # No offer ever went above the maximum or down from an earlier one.
    for pid in ("p0", "p1", "p2"):
        offers = [e.offer for e in decided if e.provider_id == pid and e.action == "counter"]
        assert offers == sorted(offers) and all(o is not None and o <= 250 for o in offers)

    rows = {p["id"]: p for p in doc["providers"]}
    assert (rows["p2"]["negotiated_price"], rows["p2"]["round"], rows["p2"]["initial_quote"]) == (150, 2, 250)
    assert (rows["p0"]["outcome"], rows["p0"]["negotiated_price"], rows["p0"]["round"]) == ("agreed", 180, 2)
    assert (rows["p1"]["outcome"], rows["p1"]["negotiated_price"], rows["p1"]["round"]) == ("agreed", 175, 1)
    # What Joe's price covers came through record_quote into the extraction and the job document.
    joe = rows["p0"]
    assert (joe["includes_parts"], joe["warranty"], joe["earliest_availability"], joe["visit_fee"],
            joe["all_in"]) == (True, "90 days", "2026-01-10", None, 180)
    first = next(e for e in history if isinstance(e, ev.PriceExtracted) and e.provider_id == "p0")
    assert (first.includes_parts, first.warranty) == (True, "90 days")
    assert doc["best_offer"]["provider_id"] == "p2" and doc["best_offer"]["price"] == 150
    completed = next(e for e in history if isinstance(e, ev.JobCompleted))
    assert (completed.best_provider_id, completed.best_price) == ("p2", 150)
    assert history.index(completed) > max(i for i, e in enumerate(history) if isinstance(e, ev.PriceExtracted))

    # The replay explains every planned call.
    env = {**os.environ, "NATS_URL": nats_server.url}
    out = subprocess.run([HAGGLE, "events", "replay", "--job", "mkt"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "round 1 (opening)" in out
    assert "round 1 (informed) carrying p0's agreed $180 (all-in $180)" in out
    assert "round 2 (callback) carrying p1's agreed $175 (all-in $175)" in out
    assert "counter $162 (counter_with_competitor): " + cited in out


def said(history: list[ev.Event], provider_id: str, *, attempt: int) -> str:
    """What the agent said on one call, as transcribed."""
    return " ".join(e.text for e in history if isinstance(e, ev.UtteranceTranscribed) and e.role == ev.Role.ASSISTANT
                    and e.provider_id == provider_id and e.attempt == attempt)
