"""Provider state as a pure fold over the event log.

The projector stores the result of this fold; the dispatcher and job completion fold a job's history
with it and take their decisions from `decisions.py` (the next dial, the market's next calls, whether the
job is complete). Because everyone folds the same events with the same function, `haggle projector
rebuild` reproduces the stored rows exactly.

The fold is round-aware: a provider's calls across negotiation rounds (a market callback, a booking call)
number their attempts on from the last one, and a `DialScheduled` of a later round queues a provider whose
last call ended.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

import msgspec

from . import events as ev
from . import fanout

# The seed's call_status vocabulary.
QUEUED, DIALING, IN_PROGRESS, COMPLETED, FAILED = "queued", "dialing", "in_progress", "completed", "failed"
TERMINAL_CALL_STATUSES = frozenset({COMPLETED, FAILED})
REQUESTED, CONFIRMED, BOOKING_FAILED = "requested", "confirmed", "failed"  # booking_status
DEFAULT_MAX_ATTEMPTS = 3

# Twilio's call statuses in the order a call moves through them. Status callbacks can arrive out of order
# (a `ringing` retried after `in-progress`, a final status twice), so a status never moves a call backwards.
_STATUS_RANK = {"queued": 0, "initiated": 1, "ringing": 2, "answered": 3, "in-progress": 3}
_FINAL_RANK = 4


def _status_rank(status: str | None) -> int:
    if status is None:
        return -1
    return _FINAL_RANK if status in ev.TERMINAL_TWILIO_STATUSES else _STATUS_RANK.get(status, 0)


class Utterance(msgspec.Struct, kw_only=True):
    utterance_id: str
    attempt: int
    seq: int
    role: str
    text: str
    spoken_at: datetime | None = None
    interrupted: bool = False
    revision: int = 0


class CallCost(msgspec.Struct, kw_only=True):
    """One call attempt's cost, from its `CallPriced`."""

    attempt: int
    call_sid: str
    currency: str = "USD"
    twilio_price: float | None = None
    realtime_cost: float = 0.0
    total: float = 0.0


class Recording(msgspec.Struct, kw_only=True):
    """One call attempt's recording, from its `CallRecorded`: where Twilio keeps it (Haggle keeps no audio)."""

    attempt: int
    call_sid: str
    recording_sid: str
    status: str
    url: str | None = None
    duration_s: float | None = None
    channels: int | None = None


class ProviderState(msgspec.Struct, kw_only=True):
    """One row of the `providers` table (the seed's columns first), plus what the log adds."""

    id: str
    job_id: str
    service_provider: str
    phone_number: str
    zip_code: str
    problem: str
    max_price: float
    context_answers: str = ""
    call_status: str = QUEUED
    negotiated_price: float | None = None
    call_transcript: str = ""
    # Added by Haggle.
    timezone: str | None = None
    outcome: str | None = None
    attempts: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    call_sid: str | None = None
    initial_quote: float | None = None
    price_type: str | None = None
    conditions: str | None = None
    evidence: list[str] = msgspec.field(default_factory=list)
    extraction_method: str | None = None
    disagreement: str | None = None
    answered_by: str | None = None
    twilio_status: str | None = None
    end_reason: str | None = None
    voicemail_left: bool = False  # a voicemail message was left (VOICEMAIL_ACTION=message)
    failure_reason: str | None = None
    retry_at: datetime | None = None
    cancelled: bool = False
    transcript: list[Utterance] = msgspec.field(default_factory=list)
    costs: list[CallCost] = msgspec.field(default_factory=list)  # one per priced call attempt
    recordings: list[Recording] = msgspec.field(default_factory=list)  # with RECORD_CALLS=on
    created_at: datetime | None = None
    dialed_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    updated_at: datetime | None = None
    last_seq: int = 0  # stream sequence of the last event applied (idempotency under redelivery)
    # The negotiation round of the provider's latest call (2+: a market callback). Attempts are numbered across
    # rounds; `max_attempts` is the last attempt number the current round may use.
    round: int = 1
    # Booking (POST /jobs/{id}/book): requested | confirmed | failed, and the appointment the business confirmed.
    booking_status: str | None = None
    appointment: str | None = None
    booking_round: int = 0  # the round of the call that confirms the latest booking request
    # What the agreed (or last) price covers, as the business said it (None: not said); see scope.py.
    visit_fee: float | None = None
    includes_parts: bool | None = None
    warranty: str | None = None
    earliest_availability: str | None = None

    @property
    def terminal(self) -> bool:
        return self.call_status in TERMINAL_CALL_STATUSES

    @property
    def cost(self) -> float | None:
        """What this provider's calls cost so far (None before any call was priced)."""
        return round(sum(c.total for c in self.costs), 6) if self.costs else None


def render_transcript(utterances: list[Utterance]) -> str:
    """The whole conversation as text, the way the seed's `call_transcript` column held it."""
    lines: list[str] = []
    attempt = None
    multi = len({u.attempt for u in utterances}) > 1
    for u in utterances:
        if multi and u.attempt != attempt:
            attempt = u.attempt
            lines.append(f"-- call attempt {attempt} --")
        who = "Agent" if u.role == ev.Role.ASSISTANT else "Provider"
        lines.append(f"{who}: {u.text}")
    return "\n".join(lines)


def _settle(state: ProviderState, outcome: ev.Outcome, *, retryable: bool) -> None:
    """Record an attempt's outcome; the provider stays queued while a retry is still allowed.

    A callback round that ends without a new agreement leaves the price agreed in an earlier round standing:
    the provider did not beat the competing quote, but its earlier word still holds.
    """
    state.outcome = outcome.value
    if retryable and should_retry(state, outcome):
        state.call_status = QUEUED
        return
    if state.booking_status == REQUESTED and state.round >= state.booking_round:
        state.booking_status = BOOKING_FAILED  # its booking call ended (or could not be made) without a yes
    if outcome == ev.Outcome.AGREED or _keeps_earlier_agreement(state):
        state.outcome = ev.Outcome.AGREED.value
        state.call_status = COMPLETED
    else:
        state.call_status = FAILED


def _keeps_earlier_agreement(state: ProviderState) -> bool:
    return state.round > 1 and state.negotiated_price is not None


def should_retry(state: ProviderState, outcome: ev.Outcome | str | None) -> bool:
    """Whether an attempt with this outcome earns another dial (shared by the projection and dispatcher)."""
    return (
        outcome in ev.RETRYABLE_OUTCOMES
        and not state.cancelled
        and state.attempts < state.max_attempts
    )


class ProviderTerms(TypedDict):
    problem: str
    zip_code: str
    max_price: float
    context_answers: str


def provider_terms(job: ev.JobStarted, spec: ev.ProviderSpec) -> ProviderTerms:
    """What one provider is asked about: its own spec's values where it has them, else the job's."""
    return ProviderTerms(
        problem=spec.problem or job.problem,
        zip_code=spec.zip_code or job.zip_code,
        max_price=spec.max_price if spec.max_price is not None else job.max_price,
        context_answers=spec.context_answers if spec.context_answers is not None else job.context_answers,
    )


def new_provider_state(job: ev.JobStarted, spec: ev.ProviderSpec) -> ProviderState:
    return ProviderState(
        id=spec.id,
        job_id=job.job_id,
        service_provider=spec.service_provider,
        phone_number=spec.phone_number,
        **provider_terms(job, spec),
        timezone=spec.timezone,
        max_attempts=job.max_attempts or DEFAULT_MAX_ATTEMPTS,
        created_at=job.occurred_at,
        updated_at=job.occurred_at,
    )


def apply(state: ProviderState | None, event: ev.Event, spec: ev.ProviderSpec | None = None) -> ProviderState | None:
    """Fold one provider-scoped event (or a JobStarted with the provider's spec) into its state.

    Returns None when the event cannot be applied (a call event for a provider the log never started).
    """
    if isinstance(event, ev.JobStarted):
        assert spec is not None
        if state is None:
            return new_provider_state(event, spec)
        # A re-start refreshes the job fields and never resets call progress.
        fresh = new_provider_state(event, spec)
        for name in ("service_provider", "phone_number", "zip_code", "problem", "max_price", "context_answers"):
            setattr(state, name, getattr(fresh, name))
        if event.max_attempts:
            state.max_attempts = event.max_attempts
        state.timezone = fresh.timezone or state.timezone
        return state
    if state is None:
        return None
    state.updated_at = event.occurred_at
    if isinstance(event, ev.JobCancelled):
        state.cancelled = True
        if state.call_status == QUEUED:
            state.retry_at = None
            if state.booking_status == REQUESTED:
                state.booking_status = BOOKING_FAILED
            if _keeps_earlier_agreement(state):
                state.call_status, state.outcome = COMPLETED, ev.Outcome.AGREED.value
            else:
                state.call_status = FAILED
                state.outcome = state.outcome or ev.Outcome.CANCELLED.value
        return state

    attempt = event.attempt if isinstance(event, ev.AttemptEvent) else state.attempts
    late_ok = ev.UtteranceTranscribed | ev.CallEnded | ev.CallPriced | ev.CallRecorded  # facts about a past call
    if attempt < state.attempts and not isinstance(event, late_ok):
        return state  # a late callback from an earlier attempt changes nothing

    match event:
        case ev.DialScheduled():
            new_round = event.round > state.round
            if state.terminal and state.outcome not in ev.RETRYABLE_OUTCOMES and not new_round:
                return state
            if new_round:  # a callback: the provider ended its last round and is called again
                state.round = event.round
                state.end_reason = None
                state.failure_reason = None
            state.call_status = QUEUED
            state.retry_at = event.not_before
            if event.max_attempts:
                state.max_attempts = event.max_attempts
            state.attempts = max(state.attempts, event.attempt - 1)
        case ev.CallDialed():
            ended = state.twilio_status in ev.TERMINAL_TWILIO_STATUSES
            # Settled by the call's own events (its extracted price), not by a cancel that came before the call
            # was announced: a cancel lets a call already placed run, so that one is reopened below.
            settled = state.terminal and state.outcome != ev.Outcome.CANCELLED.value
            if state.call_sid == event.call_sid and (ended or settled or state.call_status in (DIALING, IN_PROGRESS)):
                # Announced late (a dispatcher died between placing the call and saying so, or its publish was
                # retried through a NATS outage) or twice: the call's own events, even its end and its extracted
                # price, are on the log already and must not be undone.
                state.dialed_at = state.dialed_at or event.occurred_at
                state.retry_at = None
                return state
            state.attempts = max(state.attempts, event.attempt)
            state.call_sid = event.call_sid
            state.call_status = DIALING
            state.dialed_at = event.occurred_at
            state.retry_at = None
            # A callback does not undo the agreement an earlier round reached: it stands until a new one replaces it.
            state.outcome = ev.Outcome.AGREED.value if _keeps_earlier_agreement(state) else None
            state.twilio_status = "queued"
        case ev.InboundCallReceived():
            # The provider called back and the agent answered: a new attempt, live at once (no dialing, no ring).
            state.attempts = max(state.attempts, event.attempt)
            state.call_sid = event.call_sid
            state.call_status = IN_PROGRESS
            state.twilio_status = "in-progress"
            state.dialed_at = state.answered_at = event.occurred_at
            state.ended_at = None
            state.retry_at = None
            state.outcome = None
            state.end_reason = None
        case ev.DialFailed():
            state.attempts = max(state.attempts, event.attempt)
            state.failure_reason = event.reason
            state.retry_at = None
            _settle(state, ev.Outcome.FAILED, retryable=False)
        case ev.CallStatusChanged():
            same_call = state.call_sid == event.call_sid
            if event.attempt > state.attempts or state.call_sid is None:
                state.call_sid = event.call_sid  # a status may be on the log before its CallDialed
            state.attempts = max(state.attempts, event.attempt)  # so a retry decision counts this attempt
            if same_call and (
                _status_rank(event.status) < _status_rank(state.twilio_status)
                or state.twilio_status in ev.TERMINAL_TWILIO_STATUSES
            ):
                # Late or repeated: the call has moved past this (or already ended). Only fill a missing duration.
                if state.duration_s is None and event.duration_s is not None:
                    state.duration_s = event.duration_s
                return state
            state.twilio_status = event.status
            if event.duration_s is not None:
                state.duration_s = event.duration_s
            if event.status in ("initiated", "ringing", "queued") and state.call_status == QUEUED:
                state.call_status = DIALING
            elif event.status in ("in-progress", "answered") and not state.terminal:
                state.call_status = IN_PROGRESS
                state.answered_at = state.answered_at or event.occurred_at
            elif event.status in ev.UNANSWERED_OUTCOMES and not state.terminal:
                state.ended_at = event.occurred_at
                outcome = ev.UNANSWERED_OUTCOMES[event.status]
                if event.status == "failed":
                    state.failure_reason = state.failure_reason or "twilio reported the call failed"
                _settle(state, outcome, retryable=outcome in ev.RETRYABLE_OUTCOMES)
            elif event.status == "completed":
                state.ended_at = state.ended_at or event.occurred_at
        case ev.MachineDetected():
            state.answered_by = event.answered_by
        case ev.BookingRequested():
            state.booking_status = REQUESTED
            state.appointment = None
            state.booking_round = state.round + 1  # a call still running (the last booking call) is not it
        case ev.BookingRecorded():
            if state.booking_status in (REQUESTED, BOOKING_FAILED) and state.round >= state.booking_round:
                state.booking_status = CONFIRMED if event.confirmed else BOOKING_FAILED
                state.appointment = event.appointment if event.confirmed else None
        case ev.UtteranceTranscribed():
            u = Utterance(
                utterance_id=event.utterance_id,
                attempt=event.attempt,
                seq=event.seq,
                role=event.role.value,
                text=event.text,
                spoken_at=event.spoken_at,
                interrupted=event.interrupted,
                revision=event.revision,
            )
            if any(x.utterance_id == u.utterance_id and x.revision > u.revision for x in state.transcript):
                return state  # an older text of a line already revised
            kept = [x for x in state.transcript if x.utterance_id != u.utterance_id]
            kept.append(u)
            kept.sort(key=lambda x: (x.attempt, x.seq))
            state.transcript = kept
            state.call_transcript = render_transcript(kept)
        case ev.QuoteRecorded():
            if state.initial_quote is None and event.price is not None:
                state.initial_quote = event.price
        case ev.CallEnded():
            if event.attempt == state.attempts:
                state.end_reason = event.reason
                state.voicemail_left = event.voicemail_left
                state.ended_at = event.occurred_at
                state.duration_s = event.duration_s
        case ev.PriceExtracted():
            if event.attempt != state.attempts:
                return state
            if event.agreed or not _keeps_earlier_agreement(state):
                state.negotiated_price = event.price if event.agreed else None
            if event.initial_quote is not None and (state.round == 1 or state.initial_quote is None):
                state.initial_quote = event.initial_quote  # a callback's first price is not the first quote
            state.price_type = event.price_type.value
            state.conditions = event.conditions
            for name in ("visit_fee", "includes_parts", "warranty", "earliest_availability"):
                value = getattr(event, name)
                if value is not None:
                    setattr(state, name, value)
            state.evidence = list(event.evidence)
            state.extraction_method = event.method
            state.disagreement = event.disagreement
            _settle(state, event.outcome, retryable=event.outcome in ev.RETRYABLE_OUTCOMES)
        case ev.CallPriced():
            # Every attempt's cost counts, late or not; one entry per call, so a repeat replaces, never adds.
            cost = CallCost(attempt=event.attempt, call_sid=event.call_sid, currency=event.currency,
                            twilio_price=event.twilio_price, realtime_cost=event.realtime_cost, total=event.total)
            kept = [c for c in state.costs if c.call_sid != event.call_sid]
            kept.append(cost)
            kept.sort(key=lambda c: (c.attempt, c.call_sid))
            state.costs = kept
        case ev.CallRecorded():
            rec = Recording(attempt=event.attempt, call_sid=event.call_sid, recording_sid=event.recording_sid,
                            status=event.status, url=event.recording_url, duration_s=event.duration_s,
                            channels=event.channels)
            recordings = [r for r in state.recordings if r.recording_sid != event.recording_sid]
            recordings.append(rec)
            recordings.sort(key=lambda r: (r.attempt, r.recording_sid))
            state.recordings = recordings
        case _:
            pass
    return state


def fold_job(events: list[ev.Event]) -> dict[str, ProviderState]:
    """Fold a job's history (in log order) into provider states keyed by provider id."""
    states: dict[str, ProviderState] = {}
    for event in events:
        for pid, spec in fanout.targets(event, list(states)):
            result = apply(states.get(pid), event, spec)
            if result is not None:
                states[pid] = result
    return states


def job_settled(states: dict[str, ProviderState]) -> bool:
    return bool(states) and all(s.terminal for s in states.values())


def all_in(state: ProviderState) -> float | None:
    """The agreed price plus any call-out fee on top: what the homeowner pays, and what offers rank on."""
    if state.negotiated_price is None:
        return None
    return round(state.negotiated_price + (state.visit_fee or 0.0), 2)


def rank_offers(states: list[ProviderState]) -> list[ev.OfferSummary]:
    """Agreed offers first, cheapest all-in price first; then everyone else in their original order."""

    def saving(s: ProviderState) -> float | None:
        if s.negotiated_price is None or s.initial_quote is None:
            return None
        return round(s.initial_quote - s.negotiated_price, 2)

    agreed = sorted(
        (s for s in states if s.outcome == ev.Outcome.AGREED and s.negotiated_price is not None),
        key=lambda s: (all_in(s), s.service_provider),
    )
    rest = [s for s in states if s not in agreed]
    return [
        ev.OfferSummary(
            provider_id=s.id,
            service_provider=s.service_provider,
            outcome=s.outcome,
            price=s.negotiated_price,
            initial_quote=s.initial_quote,
            saving=saving(s),
            visit_fee=s.visit_fee,
            all_in=all_in(s),
        )
        for s in agreed + rest
    ]
