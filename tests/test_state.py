"""The provider-state fold shared by the projector and the services' decisions."""

from __future__ import annotations

from haggle_contracts import events as ev
from haggle_contracts import state as st


def started(max_attempts: int | None = None) -> ev.JobStarted:
    return ev.JobStarted(event_id="s", job_id="j", problem="leak", zip_code="1", max_price=100,
                         max_attempts=max_attempts,
                         providers=[ev.ProviderSpec(id="a", service_provider="A", phone_number="+14155550101")])


def dialed(attempt: int) -> list[ev.Event]:
    return [
        ev.DialScheduled(event_id=f"d{attempt}", job_id="j", provider_id="a", attempt=attempt, max_attempts=3),
        ev.CallDialed(event_id=f"c{attempt}", job_id="j", provider_id="a", attempt=attempt, call_sid=f"CA{attempt}",
                      to="+14155550101"),
    ]


def status(attempt: int, s: str) -> ev.CallStatusChanged:
    return ev.CallStatusChanged(event_id=f"s{attempt}{s}", job_id="j", provider_id="a", attempt=attempt,
                                call_sid=f"CA{attempt}", status=s)


def test_busy_stays_queued_while_retries_remain_then_fails() -> None:
    log: list[ev.Event] = [started()]
    for attempt in (1, 2, 3):
        log += [*dialed(attempt), status(attempt, "ringing"), status(attempt, "busy")]
        state = st.fold_job(log)["a"]
        assert state.outcome == "busy" and state.attempts == attempt
        assert state.call_status == ("failed" if attempt == 3 else "queued")
        assert st.should_retry(state, ev.Outcome.BUSY) is (attempt < 3)
    assert st.job_settled(st.fold_job(log))


def test_permanent_failure_is_terminal_at_once() -> None:
    log: list[ev.Event] = [started(), ev.DialScheduled(event_id="d", job_id="j", provider_id="a", attempt=1),
                           ev.DialFailed(event_id="f", job_id="j", provider_id="a", attempt=1,
                                         reason="invalid number", code=21211)]
    state = st.fold_job(log)["a"]
    assert (state.call_status, state.outcome, state.failure_reason) == ("failed", "failed", "invalid number")


def test_late_callback_of_an_old_attempt_changes_nothing() -> None:
    log: list[ev.Event] = [started(), *dialed(1), status(1, "no-answer"), *dialed(2), status(2, "in-progress"),
                           status(1, "completed")]
    state = st.fold_job(log)["a"]
    assert (state.call_status, state.attempts, state.call_sid) == ("in_progress", 2, "CA2")


def test_restart_never_resets_progress_and_cancel_fails_queued_only() -> None:
    log: list[ev.Event] = [started(), *dialed(1), status(1, "in-progress"), started()]
    assert st.fold_job(log)["a"].call_status == "in_progress"
    log.append(ev.JobCancelled(event_id="x", job_id="j"))
    assert st.fold_job(log)["a"].call_status == "in_progress"  # live calls finish
    queued = [started(), ev.DialScheduled(event_id="d", job_id="j", provider_id="a", attempt=1),
              ev.JobCancelled(event_id="x", job_id="j")]
    s = st.fold_job(queued)["a"]
    assert (s.call_status, s.outcome) == ("failed", "cancelled")


def test_utterance_snapshots_replace_by_id_and_sort_by_seq() -> None:
    def utt(uid: str, seq: int, text: str) -> ev.UtteranceTranscribed:
        return ev.UtteranceTranscribed(event_id=f"u{uid}{text}", job_id="j", provider_id="a", attempt=1,
                                       call_sid="CA1", utterance_id=uid, seq=seq, role=ev.Role.USER, text=text)

    log: list[ev.Event] = [started(), *dialed(1), utt("i2", 1, "second"), utt("i1", 0, "fir"), utt("i1", 0, "first")]
    state = st.fold_job(log)["a"]
    assert [u.text for u in state.transcript] == ["first", "second"]


def test_a_call_announced_after_its_end_stays_settled() -> None:
    """A dispatcher SIGKILLed between placing a call and publishing CallDialed: after restart, reconciliation
    publishes the call's end first and the redelivered dial announces it afterwards. The call stays settled
    and counts as the attempt it was (no phantom retry, no call reopened)."""
    schedule, announce = dialed(1)
    only_try = ev.DialScheduled(event_id="d1", job_id="j", provider_id="a", attempt=1, max_attempts=1)
    log: list[ev.Event] = [started(max_attempts=1), only_try, status(1, "no-answer"), announce]
    state = st.fold_job(log)["a"]
    assert (state.call_status, state.outcome, state.attempts, state.call_sid) == ("failed", "no_answer", 1, "CA1")
    assert state.dialed_at is not None and st.job_settled(st.fold_job(log))

    # With retries left, the end makes the provider queued again and the late announcement leaves it so.
    log = [started(max_attempts=3), schedule, status(1, "ringing"), status(1, "busy"), announce]
    state = st.fold_job(log)["a"]
    assert (state.call_status, state.outcome, state.attempts) == ("queued", "busy", 1)
    # Its retry is a new call: announced normally.
    log += dialed(2)
    state = st.fold_job(log)["a"]
    assert (state.call_status, state.outcome, state.attempts, state.call_sid) == ("dialing", None, 2, "CA2")


def test_a_call_announced_after_its_price_stays_settled() -> None:
    """The dispatcher's CallDialed publish kept failing while a NATS node was down and landed after the call had
    been answered, ended and priced (seen in the cluster test): the provider stays settled, so the job completes."""
    schedule, announce = dialed(1)
    ended = ev.CallEnded(event_id="e1", job_id="j", provider_id="a", attempt=1, call_sid="CA1", reason="end_call")
    price = ev.PriceExtracted(event_id="p1", job_id="j", provider_id="a", attempt=1, call_sid="CA1",
                              outcome=ev.Outcome.AGREED, agreed=True, price=90.0)
    log: list[ev.Event] = [started(), schedule, status(1, "in-progress"), ended, price, announce]
    state = st.fold_job(log)["a"]
    assert (state.call_status, state.outcome, state.negotiated_price, state.attempts) == ("completed", "agreed",
                                                                                        90.0, 1)
    assert state.dialed_at is not None and st.job_settled(st.fold_job(log))


def test_cancel_before_the_announcement_still_lets_the_call_run() -> None:
    """Cancel lands between DialScheduled and CallDialed (the call was placed already, and its first callback
    came first): the live call goes on and is reported, as the cancel promises for live calls."""
    schedule, announce = dialed(1)
    cancel = ev.JobCancelled(event_id="x", job_id="j")
    state = st.fold_job([started(), schedule, cancel, status(1, "initiated"), announce])["a"]
    assert (state.call_status, state.outcome, state.call_sid) == ("dialing", None, "CA1")


def test_out_of_order_status_callbacks_never_move_a_call_backwards() -> None:
    log: list[ev.Event] = [started(), *dialed(1), status(1, "initiated"), status(1, "in-progress"),
                           status(1, "ringing")]
    state = st.fold_job(log)["a"]
    assert (state.call_status, state.twilio_status) == ("in_progress", "in-progress")
    done = ev.CallStatusChanged(event_id="s1completed", job_id="j", provider_id="a", attempt=1, call_sid="CA1",
                                status="completed", duration_s=42.0)
    twice = ev.CallStatusChanged(event_id="s1completed-again", job_id="j", provider_id="a", attempt=1,
                                 call_sid="CA1", status="completed", duration_s=None)
    log += [done, status(1, "ringing"), twice, status(1, "in-progress")]
    state = st.fold_job(log)["a"]
    assert (state.twilio_status, state.duration_s) == ("completed", 42.0)
    assert state.ended_at == done.occurred_at  # the first end counts; repeats change nothing
    # A late CallDialed for the ended call does not reopen it (its status is still terminal).
    log.append(dialed(1)[1])
    assert st.fold_job(log)["a"].twilio_status == "completed"


def test_ringing_after_the_final_status_leaves_the_outcome() -> None:
    log: list[ev.Event] = [started(), *dialed(1), status(1, "initiated"), status(1, "no-answer"),
                           status(1, "ringing")]
    state = st.fold_job(log)["a"]
    # Still waiting for its retry: a late `ringing` must not make it look as if it were being dialled.
    assert (state.call_status, state.outcome, state.twilio_status) == ("queued", "no_answer", "no-answer")


def test_a_new_attempt_takes_statuses_even_after_the_last_one_ended() -> None:
    log: list[ev.Event] = [started(), *dialed(1), status(1, "busy"),
                           ev.DialScheduled(event_id="d2", job_id="j", provider_id="a", attempt=2, max_attempts=3),
                           status(2, "ringing")]  # attempt 2's first status before its CallDialed
    state = st.fold_job(log)["a"]
    assert (state.call_sid, state.twilio_status, state.call_status) == ("CA2", "ringing", "dialing")
