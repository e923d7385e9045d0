"""The market simulator: `market` beats `independent` and the seed's policy, and the audits can catch a cheat."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
from haggle_contracts.offer_policy import Decision, Move, OfferFacts, decide
from haggle_sim import market as sim

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(300)  # ~0.2 s; the README's table uses `make eval-negotiation` (2000 markets)


def test_market_beats_independent_and_the_seed_on_a_small_seeded_run() -> None:
    summaries = {s.strategy: s for s in sim.evaluate(SEEDS)}
    market, independent, seed = summaries["market"], summaries["independent"], summaries["seed"]
    for s in summaries.values():
        assert s.markets == len(SEEDS)
        assert s.overpays == 0, s
        assert s.invented_leverage == 0, s
    assert market.price_vs_lowest_reservation < independent.price_vs_lowest_reservation
    assert market.price_vs_lowest_reservation < seed.price_vs_lowest_reservation
    assert market.saving_vs_best_first_quote > independent.saving_vs_best_first_quote
    assert market.deal_rate >= independent.deal_rate
    assert market.deal_rate >= seed.deal_rate
    assert all(r >= 1 for r in (market.price_vs_lowest_reservation, seed.price_vs_lowest_reservation))


def test_the_run_is_deterministic() -> None:
    assert sim.evaluate(range(40)) == sim.evaluate(range(40))
    assert sim.make_market(7) == sim.make_market(7) and sim.make_market(7) != sim.make_market(8)


def test_markets_have_three_to_six_providers_of_every_style() -> None:
    markets = [sim.make_market(s) for s in range(200)]
    assert {len(m.providers) for m in markets} == {3, 4, 5, 6}
    assert {p.style for m in markets for p in m.providers} == set(sim.STYLES)
    for m in markets:
        for p in m.providers:
            assert p.first_quote >= p.reservation  # nobody opens under its own floor


def test_a_provider_never_agrees_under_its_reservation() -> None:
    for s in range(100):
        market = sim.make_market(s)
        result = sim.run_job(market, "market")
        if result.paid is not None:
            assert result.paid >= market.lowest_reservation - 1e-9


def _lying(facts: OfferFacts) -> Decision:
    """A policy that invents a cheaper competitor: the audit must count it."""
    d = decide(facts)
    if d.move.action != "counter":
        return d
    say = f"Another provider quoted me $1.23 for this. {d.move.say}"
    return msgspec.structs.replace(d, move=Move(action="counter", offer=d.move.offer, say=say))


def _overspending(facts: OfferFacts) -> Decision:
    """A policy that accepts anything: the audit must count what is above the maximum."""
    ask = facts.current_price
    return Decision(move=Move(action="accept", offer=ask, say=f"${ask:g} works."), reason="test",
                    ask_all_in=ask)


def test_the_audits_catch_invented_leverage_and_overpaying(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    markets = [sim.make_market(s) for s in range(30)]
    monkeypatch.setattr(sim, "decide", _lying)
    lied = sum(sim.run_job(m, "market").audit.invented_leverage for m in markets)
    assert lied > 0
    monkeypatch.setattr(sim, "decide", _overspending)
    over = sum(sim.run_job(m, "independent").audit.overpays for m in markets)
    assert over > 0


def test_eval_script_prints_the_table_and_exits_0() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval_negotiation.py"), "--markets", "30"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "| `market` |" in out and "| `independent` |" in out and "| `seed` |" in out
    as_json = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval_negotiation.py"), "--markets", "30",
                              "--json"], capture_output=True, text=True, timeout=60, check=True).stdout
    data = json.loads(as_json)
    assert [s["strategy"] for s in data["summaries"]] == ["market", "independent", "seed"]
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval_negotiation.py"), "--markets", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--markets" in bad.stderr
