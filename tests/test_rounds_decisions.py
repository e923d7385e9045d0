"""Decisions beside the fold: the round-aware provider fold, retries (`next_dial`), the market's planned calls
and job completion, all as pure functions of a job's events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from haggle_contracts import decisions
from haggle_contracts import events as ev
from haggle_contracts import state as st
from haggle_contracts.market import MarketPolicy

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
MARKET = MarketPolicy(strategy="market", rounds=2, max_concurrent_calls=10)


def started(*pids: str) -> ev.JobStarted:
    return ev.JobStarted(event_id="s", job_id="j", problem="leak", zip_code="1", max_price=200, max_attempts=2,
                         providers=[ev.ProviderSpec(id=p, service_provider=p.upper(), phone_number="+14155550101")
                                    for p in pids])


def call(pid: str, attempt: int, *, prices: list[float], agreed: float | None, round_: int = 1) -> list[ev.Event]:
    """One answered call of `pid`: the prices it stated (record_quote) and the extracted result."""
    sid = f"CA{pid}{attempt}"
    out: list[ev.Event] = [
        ev.DialScheduled(event_id=f"d{pid}{attempt}", job_id="j", provider_id=pid, attempt=attempt,
                         max_attempts=attempt + 1, round=round_),
        ev.CallDialed(event_id=f"c{pid}{attempt}", job_id="j", provider_id=pid, attempt=attempt, call_sid=sid,
                      to="+1", round=round_),
        ev.CallStatusChanged(event_id=f"ip{pid}{attempt}", job_id="j", provider_id=pid, attempt=attempt,
                             call_sid=sid, status="in-progress"),
    ]
    for i, price in enumerate(prices):
        out.append(ev.QuoteRecorded(event_id=f"q{pid}{attempt}{i}", job_id="j", provider_id=pid, attempt=attempt,
                                    call_sid=sid, price=price, price_type=ev.PriceType.FLAT,
                                    agreed=agreed == price or None))
    out.append(ev.PriceExtracted(
        event_id=f"p{pid}{attempt}", job_id="j", provider_id=pid, attempt=attempt, call_sid=sid,
        outcome=ev.Outcome.AGREED if agreed is not None else ev.Outcome.NO_AGREEMENT, agreed=agreed is not None,
        price=agreed, price_type=ev.PriceType.FLAT))
    return out


def place(history: list[ev.Event]) -> list[decisions.PlannedDial]:
    plans = decisions.plan_calls(history, MARKET, attempts_per_round=2)
    for p in plans:
        history += [p.planned, p.dial]
    return plans


def test_a_callback_round_reopens_a_settled_provider_and_keeps_its_earlier_agreement() -> None:
    log: list[ev.Event] = [started("a"), *call("a", 1, prices=[200, 180], agreed=180)]
    assert st.fold_job(log)["a"].call_status == st.COMPLETED
    # Round 2: the dial of a settled provider is not ignored; the provider is queued again.
    log.append(ev.DialScheduled(event_id="d2", job_id="j", provider_id="a", attempt=2, max_attempts=3, round=2))
    state = st.fold_job(log)["a"]
    assert (state.round, state.call_status, state.negotiated_price) == (2, st.QUEUED, 180)
    # The callback fails to beat the best: the agreement of round 1 stands.
    refused = call("a", 2, prices=[180], agreed=None, round_=2)[1:]
    state = st.fold_job([*log, *refused])["a"]
    assert (state.call_status, state.outcome, state.negotiated_price, state.attempts) == ("completed", "agreed",
                                                                                         180, 2)
    # It beats it: the new price replaces the old one.
    state = st.fold_job([*log, *call("a", 2, prices=[170], agreed=170, round_=2)[1:]])["a"]
    assert (state.outcome, state.negotiated_price, state.initial_quote) == ("agreed", 170, 200)


def test_next_dial_is_the_retry_the_fold_left_queued() -> None:
    log: list[ev.Event] = [started("a"), *call("a", 1, prices=[], agreed=None)[:2],
                           ev.CallStatusChanged(event_id="b", job_id="j", provider_id="a", attempt=1,
                                                call_sid="CAa1", status="busy")]
    dial = decisions.next_dial(st.fold_job(log)["a"], retry_delay_s=60, now=NOW)
    assert dial is not None and (dial.attempt, dial.reason, dial.not_before) == (2, "busy", NOW + timedelta(seconds=60))
    log += [dial, ev.CallDialed(event_id="c2", job_id="j", provider_id="a", attempt=2, call_sid="CA2", to="+1"),
            ev.CallStatusChanged(event_id="b2", job_id="j", provider_id="a", attempt=2, call_sid="CA2", status="busy")]
    assert decisions.next_dial(st.fold_job(log)["a"], retry_delay_s=60, now=NOW) is None  # max_attempts used
    cancelled = [*log[:4], ev.JobCancelled(event_id="x", job_id="j")]
    assert decisions.next_dial(st.fold_job(cancelled)["a"], retry_delay_s=60, now=NOW) is None


def test_market_staggers_then_informs_then_calls_back_above_the_best_and_completes() -> None:
    log: list[ev.Event] = [started("a", "b", "c")]
    opening = place(log)
    assert [(p.planned.provider_id, p.planned.reason, p.dial.attempt) for p in opening] == [("a", "opening", 1)]
    assert place(log) == []  # one call while no price is known
    assert decisions.completion(log, MARKET) is None
    log += call("a", 1, prices=[200, 190], agreed=190)[1:]
    informed = place(log)
    assert [(p.planned.provider_id, p.planned.reason, p.planned.shown) for p in informed] == [
        ("b", "informed", 190), ("c", "informed", 190)]
    assert informed[0].planned.competitor is not None and informed[0].planned.competitor.provider_id == "a"
    log += call("b", 1, prices=[210, 175], agreed=175)[1:]
    assert decisions.completion(log, MARKET) is None  # c is still being called
    log += call("c", 1, prices=[220, 185], agreed=185)[1:]
    assert decisions.completion(log, MARKET) is None  # a callback can still beat 175
    callbacks = place(log)
    assert [(p.planned.provider_id, p.planned.round, p.planned.reason, p.planned.shown, p.dial.attempt,
             p.dial.max_attempts) for p in callbacks] == [("a", 2, "callback", 175, 2, 3),
                                                          ("c", 2, "callback", 175, 2, 3)]
    log += call("a", 2, prices=[190], agreed=None, round_=2)[1:]
    log += call("c", 2, prices=[170], agreed=170, round_=2)[1:]
    # b heard 190, and 170 is now the best: it is called back too; a and c have used their rounds.
    assert decisions.completion(log, MARKET) is None
    assert [(p.planned.provider_id, p.planned.shown) for p in place(log)] == [("b", 170)]
    log += call("b", 2, prices=[175], agreed=None, round_=2)[1:]
    done = decisions.completion(log, MARKET)
    assert done is not None and (done.best_provider_id, done.best_price) == ("c", 170)
    assert [(o.provider_id, o.price) for o in done.offers] == [("c", 170), ("b", 175), ("a", 190)]
    assert place(log) == []


def test_independent_completion_needs_only_settled_providers() -> None:
    log: list[ev.Event] = [started("a", "b"), *call("a", 1, prices=[200], agreed=200),
                           *call("b", 1, prices=[150], agreed=150)]
    independent = MarketPolicy(strategy="independent")
    done = decisions.completion(log, independent)
    assert done is not None and done.best_price == 150
    # The market would call a back (150 is below its 200), so the job is not complete under it.
    assert decisions.completion(log, MARKET) is None
    assert decisions.completion([*log, done], independent) is None  # published once


def test_a_booking_fails_only_with_its_own_call_and_a_new_request_waits_for_the_running_one() -> None:
    log: list[ev.Event] = [started("a"), *call("a", 1, prices=[200, 175], agreed=175)]
    log.append(ev.BookingRequested(event_id="b1", job_id="j", provider_id="a", price=175, windows=["Sat"]))
    state = st.fold_job(log)["a"]
    dial = decisions.booking_dial(state, attempts_per_round=2)
    assert state.booking_status == "requested" and dial is not None and (dial.round, dial.attempt) == (2, 2)
    booking_call = call("a", 2, prices=[], agreed=None, round_=2)
    log += booking_call[:3]  # the booking call is under way
    log.append(ev.BookingRecorded(event_id="r1", job_id="j", provider_id="a", attempt=2, call_sid="CAa2",
                                  confirmed=False, notes="booked out"))
    assert st.fold_job(log)["a"].booking_status == "failed"
    # Booked again while that call still runs: its end must not fail the new request.
    log.append(ev.BookingRequested(event_id="b2", job_id="j", provider_id="a", price=175, request=2))
    assert decisions.booking_dial(st.fold_job(log)["a"], attempts_per_round=2) is None  # wait for the call to end
    log += booking_call[3:]
    state = st.fold_job(log)["a"]
    assert (state.booking_status, state.outcome, state.negotiated_price) == ("requested", "agreed", 175)
    dial = decisions.booking_dial(state, attempts_per_round=2)
    assert dial is not None and (dial.round, dial.attempt, dial.reason) == (3, 3, "booking")
    log += call("a", 3, prices=[], agreed=None, round_=3)[:3]
    log.append(ev.BookingRecorded(event_id="r2", job_id="j", provider_id="a", attempt=3, call_sid="CAa3",
                                  confirmed=True, appointment="Tue 10am"))
    state = st.fold_job([*log, *call("a", 3, prices=[], agreed=None, round_=3)[3:]])["a"]
    assert (state.booking_status, state.appointment, state.negotiated_price) == ("confirmed", "Tue 10am", 175)


def test_offers_rank_on_the_all_in_price() -> None:
    log: list[ev.Event] = [started("a", "b"), *call("a", 1, prices=[150], agreed=150),
                           *call("b", 1, prices=[180], agreed=180)]
    fee = next(e for e in log if isinstance(e, ev.PriceExtracted) and e.provider_id == "a")
    log[log.index(fee)] = ev.PriceExtracted(**{**{f: getattr(fee, f) for f in fee.__struct_fields__},
                                               "visit_fee": 49.0})
    offers = st.rank_offers(list(st.fold_job(log).values()))
    assert [(o.provider_id, o.price, o.all_in) for o in offers] == [("b", 180, 180), ("a", 150, 199)]
    done = decisions.completion(log, MarketPolicy(strategy="independent"))
    assert done is not None and done.best_provider_id == "b"


def test_after_completion_only_providers_a_restart_added_are_called() -> None:
    log: list[ev.Event] = [started("a", "b"), *call("a", 1, prices=[200], agreed=200),
                           *call("b", 1, prices=[150], agreed=150)]
    for e in log:
        if isinstance(e, ev.DialScheduled):
            log.insert(log.index(e), ev.CallPlanned(event_id=f"plan{e.provider_id}", job_id="j",
                                                    provider_id=e.provider_id, round=1, reason="opening"))
            break
    done = decisions.completion(log, MarketPolicy(strategy="independent"))
    assert done is not None
    log.append(done)
    assert place(log) == []  # a's callback round is over once the job completed
    restart = ev.JobStarted(event_id="s2", job_id="j", problem="leak", zip_code="1", max_price=200,
                            providers=[ev.ProviderSpec(id="c", service_provider="C", phone_number="+14155550109")])
    log.append(restart)
    assert [(p.planned.provider_id, p.planned.reason, p.planned.shown) for p in place(log)] == [("c", "informed", 150)]


def test_a_callback_has_its_own_retries() -> None:
    log: list[ev.Event] = [started("a"), *call("a", 1, prices=[200], agreed=200)]
    # Round 1 used attempt 1 of max_attempts=2; the callback's dial allows two more attempts (2 and 3).
    log.append(ev.DialScheduled(event_id="d2", job_id="j", provider_id="a", attempt=2, max_attempts=3, round=2,
                                reason="callback"))
    log += [ev.CallDialed(event_id="c2", job_id="j", provider_id="a", attempt=2, call_sid="CA2", to="+1", round=2),
            ev.CallStatusChanged(event_id="b2", job_id="j", provider_id="a", attempt=2, call_sid="CA2", status="busy")]
    state = st.fold_job(log)["a"]
    assert (state.call_status, state.outcome, state.negotiated_price) == ("queued", "busy", 200)
    retry = decisions.next_dial(state, retry_delay_s=1, now=NOW)
    assert retry is not None and (retry.attempt, retry.round, retry.reason) == (3, 2, "busy")
    log += [retry, ev.CallDialed(event_id="c3", job_id="j", provider_id="a", attempt=3, call_sid="CA3", to="+1",
                                 round=2),
            ev.CallStatusChanged(event_id="b3", job_id="j", provider_id="a", attempt=3, call_sid="CA3", status="busy")]
    state = st.fold_job(log)["a"]
    # Out of retries: the callback failed to reach them, and round 1's agreement stands.
    assert decisions.next_dial(state, retry_delay_s=1, now=NOW) is None
    assert (state.call_status, state.outcome, state.negotiated_price) == ("completed", "agreed", 200)
