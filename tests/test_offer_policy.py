"""The offer policy's hard rules, by example and as properties over arbitrary facts, plus comparable scope."""

from __future__ import annotations

import json
import math
import re

import msgspec
import pytest
from haggle_contracts import offer_policy as op
from haggle_contracts.offer_policy import Decision, InvalidFacts, Move, OfferFacts, decide
from haggle_contracts.scope import (
    Quote,
    Scope,
    all_in,
    availability_date,
    best_comparable,
    best_offer,
    comparable,
    rank,
    standing_quotes,
    warranty_days,
)
from hypothesis import given, settings
from hypothesis import strategies as st

URGENCY = ("today", "tonight", "urgent", "asap", "right away", "right now", "immediately", "emergency", "hurry",
           "deadline", "limited", "last chance", "only chance", "expires", "quickly", "soon")
_NUMBER = re.compile(r"\$([\d,]+(?:\.\d+)?)")


def said_numbers(say: str) -> set[float]:
    return {float(m.replace(",", "")) for m in _NUMBER.findall(say)}


def facts(**kw: object) -> OfferFacts:
    base: dict[str, object] = {"provider_id": "a", "max_price": 250.0, "their_prices": [220.0]}
    base.update(kw)
    return OfferFacts(**base)  # type: ignore[arg-type]


def competitor(price: float, pid: str = "b", **scope: object) -> Quote:
    return Quote(provider_id=pid, price=price, scope=Scope(**scope))  # type: ignore[arg-type]


# -- the tool output --------------------------------------------------------------------------------------------


def test_move_encodes_to_exactly_the_record_quote_output() -> None:
    move = decide(facts()).move
    out = json.loads(msgspec.json.encode(move))
    assert set(out) == {"action", "offer", "say"}
    assert out["action"] == "counter" and isinstance(out["offer"], float) and out["say"]
    declined = json.loads(msgspec.json.encode(Move(action="decline", offer=None, say="x")))
    assert declined == {"action": "decline", "offer": None, "say": "x"}


def test_moves_by_example() -> None:
    opening = decide(facts())
    assert opening.move.action == "counter" and opening.move.offer == 176.0  # 20% under 220: the lowball floor
    assert opening.move.say == "Could you do it for $176?"
    assert decide(facts(their_prices=[220.0, 160.0])).move.action == "accept"  # under the 25% target
    met = decide(facts(their_prices=[220.0, 176.0], our_offers=[176.0], counters_this_call=1))
    assert (met.move.action, met.move.offer, met.reason) == ("accept", 176.0, "met_our_offer")
    final_ok = decide(facts(their_prices=[220.0, 200.0], our_offers=[176.0], counters_this_call=1, final=True))
    assert (final_ok.move.action, final_ok.reason) == ("accept", "final_within_max")
    used_up = decide(facts(their_prices=[220.0, 215, 210, 205], our_offers=[176, 180, 185], counters_this_call=3))
    assert (used_up.move.action, used_up.move.offer) == ("accept", 205)


def test_a_price_over_the_maximum_gets_one_offer_at_the_limit_then_a_decline() -> None:
    over = facts(max_price=200.0, their_prices=[300.0, 280.0], our_offers=[190.0], counters_this_call=1,
                 final=True)
    last = decide(over)
    assert (last.move.action, last.move.offer, last.reason) == ("counter", 200.0, "last_offer_at_limit")
    assert last.move.say == "The most I can do is $200."
    after = decide(msgspec.structs.replace(over, our_offers=[190.0, 200.0], counters_this_call=2))
    assert (after.move.action, after.move.offer, after.reason) == ("decline", None, "final_over_max")


def test_a_visit_fee_counts_against_the_maximum_and_is_said_with_the_offer() -> None:
    d = decide(facts(max_price=200.0, their_prices=[180.0], scope=Scope(visit_fee=50.0)))
    assert d.move.action == "counter" and d.move.offer is not None and d.move.offer + 50 <= 200
    assert d.move.say.endswith("plus the $50 call-out fee?")
    assert d.ask_all_in == 230.0
    # 150 + 50 is at the maximum: acceptable after the counters; 160 + 50 is not.
    assert decide(facts(max_price=200.0, their_prices=[150.0], final=True, scope=Scope(visit_fee=50.0),
                        our_offers=[140.0], counters_this_call=1)).move.action == "accept"
    never = decide(facts(max_price=200.0, their_prices=[160.0], final=True, scope=Scope(visit_fee=50.0),
                         our_offers=[150.0], counters_this_call=1))
    assert never.move.action == "decline"


def test_bad_facts_are_a_clear_error() -> None:
    for bad in (facts(their_prices=[-1.0]), facts(their_prices=[math.nan]), facts(our_offers=[math.inf]),
                facts(target=-5.0), facts(max_price=0.0), facts(their_prices=[])):
        with pytest.raises(InvalidFacts):
            decide(bad)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"provider_id": "a", "max_price": 100, "their_prices": []}', type=OfferFacts)


# -- hard rule: never offer or accept above max_price ------------------------------------------------------------


def test_never_offers_or_accepts_above_the_maximum_by_example() -> None:
    for ask in (90.0, 100.0, 100.01, 150.0, 1000.0):
        for final in (False, True):
            d = decide(facts(max_price=100.0, their_prices=[ask], final=final))
            if d.move.offer is not None:
                assert d.move.offer <= 100.0
    assert decide(facts(max_price=100.0, their_prices=[100.01], final=True, our_offers=[100.0],
                        counters_this_call=1)).move.action == "decline"


# -- hard rule: competing quotes only when real, another provider's, comparable, and allowed -----------------------


def test_cites_a_real_lower_comparable_quote_in_its_own_words() -> None:
    d = decide(facts(job_quotes=[competitor(150.0, visit_fee=20.0)]))
    assert d.competitor is not None and d.competitor.provider_id == "b"
    assert d.move.say == ("Another provider quoted me $150 plus a $20 call-out fee for comparable work. "
                          "Could you do it for $153?")  # 10% under its $170 all-in, below the bare-counter floor


def test_an_agreed_competing_price_is_called_agreed() -> None:
    agreed = Quote(provider_id="b", price=150.0, agreed=True)
    d = decide(facts(job_quotes=[agreed]))
    assert d.move.say == "Another provider agreed to do comparable work for $150. Could you do it for $135?"


def test_never_cites_when_the_flag_is_off() -> None:
    d = decide(facts(job_quotes=[competitor(150.0)], use_competing_quotes=False))
    assert d.competitor is None and "another provider" not in d.move.say.lower()
    assert 150.0 not in said_numbers(d.move.say)


def test_never_cites_its_own_quote_a_higher_one_or_an_incomparable_one() -> None:
    cases = [
        competitor(150.0, pid="a"),  # its own earlier price
        competitor(230.0),  # not lower than the ask
        competitor(150.0, includes_parts=False),  # leaves parts out, ours includes them
        competitor(150.0, warranty="30 days"),  # shorter warranty than our 1 year
        competitor(40.0, price_type="hourly"),  # an hourly rate is not a job price
        competitor(60.0, price_type="visit_fee"),
    ]
    ours = Scope(includes_parts=True, warranty="1 year")
    for quote in cases:
        d = decide(facts(scope=ours, job_quotes=[quote]))
        assert d.competitor is None, quote
        assert "another provider" not in d.move.say.lower()


def test_cites_the_standing_quote_not_a_price_the_provider_moved_away_from() -> None:
    # b said 150, then raised to 190 (its standing quote); c agreed to 195. The best real standing quote is 190.
    quotes = [Quote(provider_id="b", price=150.0, seq=1), Quote(provider_id="b", price=190.0, seq=2),
              Quote(provider_id="c", price=195.0, agreed=True, seq=3)]
    d = decide(facts(job_quotes=quotes))
    assert d.competitor is not None and d.competitor.price == 190.0
    assert 150.0 not in said_numbers(d.move.say)


def test_a_final_price_gets_one_counter_with_a_lower_real_quote_then_final_means_final() -> None:
    base = facts(their_prices=[220.0, 210.0], our_offers=[176.0], counters_this_call=1, final=True,
                 job_quotes=[competitor(190.0)])
    first = decide(base)
    assert (first.move.action, first.reason) == ("counter", "final_but_competitor_lower")
    assert first.competitor is not None
    again = decide(msgspec.structs.replace(base, our_offers=[176.0, first.move.offer], counters_this_call=2,
                                           cited=[190.0]))
    assert (again.move.action, again.reason) == ("accept", "final_within_max")


# -- properties over arbitrary facts -----------------------------------------------------------------------------

prices = st.floats(min_value=1, max_value=5000, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 2))
fees = st.one_of(st.none(), st.sampled_from([0.0, 25.0, 49.0, 79.0, 120.0]))
scopes = st.builds(
    Scope,
    price_type=st.sampled_from(["flat", "unknown", "hourly", "visit_fee"]),
    visit_fee=fees,
    includes_parts=st.one_of(st.none(), st.booleans()),
    warranty=st.sampled_from([None, "none", "30 days", "90 days", "6 months", "1 year", "lifetime"]),
)
quotes = st.builds(Quote, provider_id=st.sampled_from(["a", "b", "c", "d"]), price=prices, scope=scopes,
                   agreed=st.booleans(), seq=st.integers(0, 50))


@st.composite
def any_facts(draw: st.DrawFn) -> OfferFacts:
    their = draw(st.lists(prices, min_size=1, max_size=5))
    ours = sorted(draw(st.lists(prices, max_size=4)))
    return OfferFacts(
        provider_id="a",
        max_price=draw(prices),
        their_prices=their,
        our_offers=ours,
        counters_this_call=draw(st.integers(0, 5)),
        final=draw(st.booleans()),
        scope=draw(scopes),
        target=draw(st.one_of(st.none(), prices)),
        job_quotes=draw(st.lists(quotes, max_size=6)),
        use_competing_quotes=draw(st.booleans()),
        cited=draw(st.lists(prices, max_size=2)),
    )


def _fee(f: OfferFacts) -> float:
    return f.scope.visit_fee or 0.0


@settings(max_examples=400, deadline=None)
@given(any_facts())
def test_property_never_above_max_price(f: OfferFacts) -> None:
    d = decide(f)
    if d.move.action in ("counter", "accept"):
        assert d.move.offer is not None
        assert d.move.offer + _fee(f) <= f.max_price + 1e-9
    else:
        assert d.move.offer is None


@settings(max_examples=400, deadline=None)
@given(any_facts())
def test_property_offers_are_monotone_and_never_above_what_they_asked(f: OfferFacts) -> None:
    d = decide(f)
    if d.move.action == "counter":
        assert d.move.offer is not None
        assert d.move.offer >= max(f.our_offers, default=0.0)
        assert d.move.offer <= min(f.their_prices)
        assert d.move.offer < f.current_price
    if d.move.action == "accept":
        assert d.move.offer == f.current_price


@settings(max_examples=400, deadline=None)
@given(any_facts())
def test_property_competing_quotes_only_real_comparable_and_allowed(f: OfferFacts) -> None:
    d = decide(f)
    others = [q for q in f.job_quotes if q.provider_id != f.provider_id]
    if d.competitor is not None:
        assert f.use_competing_quotes
        assert d.competitor in standing_quotes(f.job_quotes) and d.competitor in others
        assert comparable(f.scope, d.competitor.scope)
        assert all_in(d.competitor) < f.current_price + _fee(f)
        assert "another provider" in d.move.say.lower()
    else:
        assert "another provider" not in d.move.say.lower()


@settings(max_examples=400, deadline=None)
@given(any_facts())
def test_property_say_is_filled_only_from_the_inputs_and_invents_no_urgency(f: OfferFacts) -> None:
    d = decide(f)
    own = {f.current_price, _fee(f), *([d.move.offer] if d.move.offer is not None else [])}
    cited = {d.competitor.price, d.competitor.scope.visit_fee or 0.0} if d.competitor is not None else set()
    for n in said_numbers(d.move.say):
        assert any(abs(n - x) < 0.005 for x in own | cited), (n, d.move.say)
    lowered = d.move.say.lower()
    assert not any(word in lowered for word in URGENCY), d.move.say


def _negotiate(f: OfferFacts, responses: list[tuple[float, bool]]) -> list[Decision]:
    """Play decisions against scripted replies (new price, final) and return every decision."""
    out: list[Decision] = []
    counters = 0
    for price, final in responses:
        d = decide(f)
        out.append(d)
        if d.move.action != "counter":
            break
        counters += 1
        f = msgspec.structs.replace(f, our_offers=[*f.our_offers, d.move.offer], counters_this_call=counters,
                                    their_prices=[*f.their_prices, price], final=final)
    return out


@settings(max_examples=300, deadline=None)
@given(any_facts(), st.lists(st.tuples(prices, st.booleans()), min_size=1, max_size=8))
def test_property_a_whole_negotiation_keeps_offers_monotone_and_ends(f: OfferFacts,
                                                                     replies: list[tuple[float, bool]]) -> None:
    f = msgspec.structs.replace(f, our_offers=[], counters_this_call=0)
    decisions = _negotiate(f, replies)
    offers = [d.move.offer for d in decisions if d.move.action == "counter"]
    assert offers == sorted(offers)
    assert len(offers) <= f.max_counters + 2  # the counters, one citation after a final, one offer at the limit


def test_constants_are_sane() -> None:
    assert all(0 < s < 1 for s in op.CONCESSION_SCHEDULE)
    assert 0 < op.BEAT_MARGIN < 0.5 and 0 < op.MIN_COUNTER_SHARE <= 1


# -- comparable scope --------------------------------------------------------------------------------------------


def test_all_in_adds_the_visit_fee() -> None:
    assert all_in(Quote(provider_id="a", price=150.0, scope=Scope(visit_fee=79.0))) == 229.0
    assert all_in(Quote(provider_id="a", price=150.0)) == 150.0


def test_warranty_and_availability_parsing() -> None:
    assert [warranty_days(w) for w in ("90 days", "1 year", "6 months", "2 weeks", "none", "No warranty", None,
                                       "lifetime")] == [90, 365, 180, 14, 0, 0, None, None]
    assert availability_date("2026-12-07") is not None and availability_date("tomorrow") is None


def test_comparable_rules() -> None:
    assert comparable(Scope(), Scope())
    assert comparable(Scope(includes_parts=True), Scope(includes_parts=None))  # unknown is not different
    assert not comparable(Scope(includes_parts=True), Scope(includes_parts=False))
    assert comparable(Scope(includes_parts=False), Scope(includes_parts=True))  # covers more: fine
    assert not comparable(Scope(warranty="1 year"), Scope(warranty="90 days"))
    assert comparable(Scope(warranty="90 days"), Scope(warranty="1 year"))
    assert not comparable(Scope(price_type="flat"), Scope(price_type="hourly"))
    assert comparable(Scope(price_type="flat"), Scope(price_type="unknown"))


def test_rank_on_all_in_then_availability_then_id() -> None:
    qs = [
        Quote(provider_id="hourly", price=50.0, scope=Scope(price_type="hourly")),
        Quote(provider_id="fee", price=150.0, scope=Scope(visit_fee=79.0)),  # 229 all-in
        Quote(provider_id="late", price=200.0, scope=Scope(earliest_availability="2026-12-09")),
        Quote(provider_id="soon", price=200.0, scope=Scope(earliest_availability="2026-12-05")),
        Quote(provider_id="b-unknown", price=200.0),
        Quote(provider_id="a-unknown", price=200.0),
    ]
    assert [q.provider_id for q in rank(qs)] == ["soon", "late", "a-unknown", "b-unknown", "fee", "hourly"]


def test_best_comparable_and_best_offer() -> None:
    qs = [
        Quote(provider_id="a", price=100.0, seq=1),
        Quote(provider_id="b", price=120.0, agreed=True, seq=2),
        Quote(provider_id="b", price=200.0, seq=3),  # said after agreeing: the agreement stands
        Quote(provider_id="c", price=90.0, scope=Scope(includes_parts=False), seq=4),
    ]
    assert [q.price for q in standing_quotes(qs)] == [100.0, 120.0, 90.0]
    best = best_comparable(qs, "a", Scope(includes_parts=True))
    assert best is not None and best.provider_id == "b"
    assert best_comparable(qs, "a", Scope()) is not None and best_comparable(qs, "a", Scope()).provider_id == "c"
    assert best_comparable([qs[0]], "a", Scope()) is None
    offer = best_offer(qs)
    assert offer is not None and (offer.provider_id, offer.price) == ("b", 120.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(quotes, max_size=8), scopes, st.sampled_from(["a", "b", "z"]))
def test_property_best_comparable_is_another_provider_s_lowest_comparable_standing_quote(
        qs: list[Quote], ours: Scope, pid: str) -> None:
    best = best_comparable(qs, pid, ours)
    candidates = [q for q in standing_quotes(qs) if q.provider_id != pid and comparable(ours, q.scope)]
    if best is None:
        assert candidates == []
    else:
        assert best in candidates and all(all_in(best) <= all_in(q) for q in candidates)
    assert rank(rank(qs)) == rank(qs) and sorted(map(id, rank(qs))) == sorted(map(id, qs))


def test_a_decision_round_trips_as_json_for_an_event() -> None:
    d = decide(facts(job_quotes=[competitor(150.0, visit_fee=20.0, warranty="90 days")]))
    assert msgspec.json.decode(msgspec.json.encode(d), type=Decision) == d
    f = facts(job_quotes=[competitor(150.0)], cited=[150.0])
    assert msgspec.json.decode(msgspec.json.encode(f), type=OfferFacts) == f
