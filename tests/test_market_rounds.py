"""The job as the unit that negotiates: which providers are called, in which round, and when the job is done."""

from __future__ import annotations

import msgspec
from haggle_contracts.market import (
    MarketPolicy,
    MarketState,
    ProviderProgress,
    callback_for,
    job_complete,
    next_calls,
)
from haggle_contracts.scope import Quote, Scope
from hypothesis import given, settings
from hypothesis import strategies as st

MARKET = MarketPolicy(strategy="market", rounds=2, max_concurrent_calls=10)
INDEPENDENT = MarketPolicy(strategy="independent", rounds=2, max_concurrent_calls=10)


def waiting(*ids: str) -> list[ProviderProgress]:
    return [ProviderProgress(provider_id=i) for i in ids]


def done(pid: str, *, rounds: int = 1, shown: float | None = None, highest: float | None = None) -> ProviderProgress:
    return ProviderProgress(provider_id=pid, status="done", rounds_called=rounds, shown=shown, highest_offer=highest)


def q(pid: str, price: float, seq: int, agreed: bool = False, **scope: object) -> Quote:
    return Quote(provider_id=pid, price=price, seq=seq, agreed=agreed, scope=Scope(**scope))  # type: ignore[arg-type]


def test_defaults_are_the_issue_s() -> None:
    policy = MarketPolicy()
    assert (policy.strategy, policy.rounds, policy.use_competing_quotes) == ("market", 2, True)
    with_bad = b'{"strategy": "auction"}'
    try:
        msgspec.json.decode(with_bad, type=MarketPolicy)
    except msgspec.ValidationError as e:
        assert "strategy" in str(e)
    else:
        raise AssertionError("an unknown strategy must be rejected")


def test_independent_calls_everyone_at_once_within_the_cap_and_has_one_round() -> None:
    state = MarketState(providers=waiting("a", "b", "c", "d"))
    calls = next_calls(state, INDEPENDENT)
    assert [(c.provider_id, c.round, c.reason, c.competitor) for c in calls] == [
        (p, 1, "independent", None) for p in "abcd"]
    capped = next_calls(state, msgspec.structs.replace(INDEPENDENT, max_concurrent_calls=3))
    assert [c.provider_id for c in capped] == ["a", "b", "c"]
    finished = MarketState(providers=[done("a"), done("b")], quotes=[q("a", 100, 1), q("b", 200, 2)])
    assert next_calls(finished, INDEPENDENT) == [] and job_complete(finished, INDEPENDENT)


def test_market_staggers_the_first_round_until_a_real_quote_is_known() -> None:
    state = MarketState(providers=waiting("a", "b", "c"))
    opening = next_calls(state, MARKET)
    assert [(c.provider_id, c.round, c.reason) for c in opening] == [("a", 1, "opening")]
    running = MarketState(providers=[ProviderProgress(provider_id="a", status="calling", rounds_called=1),
                                     *waiting("b", "c")])
    assert next_calls(running, MARKET) == []  # no price known yet: the others wait for it
    quoted = msgspec.structs.replace(running, quotes=[q("a", 180, 1)])
    informed = next_calls(quoted, MARKET)
    assert [(c.provider_id, c.reason) for c in informed] == [("b", "informed"), ("c", "informed")]
    assert all(c.competitor == q("a", 180, 1) for c in informed)
    # An opener that ends without a price hands over to the next one.
    silent = MarketState(providers=[ProviderProgress(provider_id="a", status="closed", rounds_called=1),
                                    *waiting("b", "c")])
    assert [c.provider_id for c in next_calls(silent, MARKET)] == ["b"]


def test_market_respects_max_concurrent_calls() -> None:
    policy = msgspec.structs.replace(MARKET, max_concurrent_calls=2)
    state = MarketState(providers=[ProviderProgress(provider_id="a", status="calling", rounds_called=1),
                                   *waiting("b", "c", "d")], quotes=[q("a", 180, 1)])
    assert [c.provider_id for c in next_calls(state, policy)] == ["b"]


def test_second_round_calls_back_those_above_the_best_with_the_best_real_quote() -> None:
    quotes = [q("a", 150, 1, agreed=True), q("b", 200, 2), q("c", 190, 3, agreed=True), q("d", 260, 4)]
    state = MarketState(providers=[done("a", highest=150), done("b", highest=140), done("c", highest=170),
                                   done("d", highest=170)], quotes=quotes)
    calls = next_calls(state, MARKET)
    # a holds the best; d's highest offer (170) is already above the best (150), so it cannot improve on it.
    assert [(c.provider_id, c.round, c.reason) for c in calls] == [("b", 2, "callback")]
    assert calls[0].competitor == q("a", 150, 1, agreed=True)
    assert not job_complete(state, MARKET)


def test_no_second_round_while_the_first_is_running_or_for_closed_or_incomparable_providers() -> None:
    quotes = [q("a", 150, 1, includes_parts=False), q("b", 230, 2), q("c", 220, 3, includes_parts=True),
              q("d", 21, 4, price_type="hourly")]
    running = MarketState(providers=[done("a"), done("b"),
                                     ProviderProgress(provider_id="c", status="calling", rounds_called=1)],
                          quotes=quotes[:3])
    assert next_calls(running, MARKET) == []
    state = MarketState(providers=[
        done("a"),
        ProviderProgress(provider_id="b", status="closed", rounds_called=1),  # walked away
        done("c"),  # a's quote leaves parts out and c's includes them: not leverage against c
        done("d"),  # an hourly rate is not a job price
    ], quotes=quotes)
    assert next_calls(state, MARKET) == [] and job_complete(state, MARKET)


def test_rounds_end_the_callbacks() -> None:
    quotes = [q("a", 150, 1), q("b", 200, 2)]
    second_done = MarketState(providers=[done("a"), done("b", rounds=2, shown=150)], quotes=quotes)
    assert next_calls(second_done, MARKET) == [] and job_complete(second_done, MARKET)
    three = msgspec.structs.replace(MARKET, rounds=3)
    assert next_calls(second_done, three) == []  # it already heard 150 and did not beat it
    better = msgspec.structs.replace(second_done, quotes=[*quotes, q("c", 140, 3)],
                                     providers=[*second_done.providers, done("c")])
    assert [(c.provider_id, c.round) for c in next_calls(better, three)] == [("a", 2), ("b", 3)]
    assert [(c.provider_id, c.round) for c in next_calls(better, MARKET)] == [("a", 2)]  # b has had its 2 rounds


def test_without_competing_quotes_market_neither_staggers_nor_calls_back() -> None:
    policy = msgspec.structs.replace(MARKET, use_competing_quotes=False)
    fresh = MarketState(providers=waiting("a", "b", "c"))
    assert [(c.provider_id, c.reason, c.competitor) for c in next_calls(fresh, policy)] == [
        (p, "independent", None) for p in "abc"]
    state = MarketState(providers=[done("a"), done("b")], quotes=[q("a", 150, 1), q("b", 200, 2)])
    assert callback_for(state, state.providers[1], policy) is None
    assert job_complete(state, policy)


# -- properties: the cap always holds and the rounds always end --------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 8),
    cap=st.integers(1, 6),
    rounds=st.integers(1, 4),
    strategy=st.sampled_from(["market", "independent"]),
    prices=st.lists(st.one_of(st.none(), st.integers(50, 500)), min_size=32, max_size=32),
)
def test_property_within_the_cap_and_the_job_completes(n: int, cap: int, rounds: int, strategy: str,
                                                       prices: list[int | None]) -> None:
    """Play the plan with arbitrary call results (a price, or none) one call at a time: never over the cap, never
    more than `rounds` calls per provider, and the job completes."""
    policy = MarketPolicy(strategy=strategy, rounds=rounds, max_concurrent_calls=cap)  # type: ignore[arg-type]
    progress = {f"p{i}": ProviderProgress(provider_id=f"p{i}") for i in range(n)}
    quotes: list[Quote] = []
    results = iter(prices)
    calls = 0
    for _ in range(n * rounds + 1):
        state = MarketState(providers=list(progress.values()), quotes=list(quotes))
        planned = next_calls(state, policy)
        running = sum(1 for p in state.providers if p.status == "calling")
        assert running + len(planned) <= cap
        if not planned:
            assert job_complete(state, policy)
            break
        for call in planned:  # place them all, then finish them one by one
            progress[call.provider_id] = msgspec.structs.replace(progress[call.provider_id], status="calling",
                                                                 rounds_called=call.round)
        for call in planned:
            calls += 1
            price = next(results, None)
            if price is not None:
                quotes.append(Quote(provider_id=call.provider_id, price=float(price), seq=len(quotes)))
            shown = call.competitor.price if call.competitor is not None else progress[call.provider_id].shown
            progress[call.provider_id] = msgspec.structs.replace(progress[call.provider_id], status="done",
                                                                 shown=shown)
    else:
        raise AssertionError("the job never completed")
    assert calls <= n * policy.max_rounds
    assert all(p.rounds_called <= policy.max_rounds for p in progress.values())
