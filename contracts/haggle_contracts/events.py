"""The event catalog: every fact Haggle records, as versioned msgspec Structs.

Events are the only thing services share. Each one is a self-contained, immutable fact:
- `event_id` doubles as the JetStream `Nats-Msg-Id`, so a retried publish is stored once;
- `v` is the schema version of that event type; a consumer that meets a version it does not know
  dead-letters the message instead of guessing;
- `job_id` (and `provider_id` for call events) are part of the subject, so one job's history replays
  with a subject filter (see `subjects.py`).

A new event type is added to `AnyEvent` (ALL_EVENTS follows from it) and given a subject kind in `subjects.py`. An
event about one provider subclasses `ProviderEvent` (provider_id), `AttemptEvent` (+ attempt) or `CallEvent`
(+ call_sid) instead of `Event` and does not declare those fields again: the fold, the projector and the
dashboard then fan it out to its provider (`fanout.py`) with no other change.

Adding an optional field with a default keeps `v`; renaming, removing or changing the meaning of a
field bumps `v` and adds a new Struct beside the old one.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, get_args

import msgspec

from .offer_policy import Decision, OfferFacts
from .scope import Quote

# Ids travel inside NATS subject tokens: no dots, spaces or wildcards.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
E164 = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]
Money = Annotated[float, msgspec.Meta(ge=0)]


def new_id(prefix: str) -> str:
    """A short random id that is safe as a NATS subject token."""
    return f"{prefix}_{secrets.token_hex(8)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Role(StrEnum):
    ASSISTANT = "assistant"  # our agent, speaking for the homeowner
    USER = "user"  # the provider on the phone


class Outcome(StrEnum):
    AGREED = "agreed"
    NO_AGREEMENT = "no_agreement"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"
    IVR_STUCK = "ivr_stuck"  # a phone menu that never let the agent through
    DECLINED = "declined"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PriceType(StrEnum):
    FLAT = "flat"
    HOURLY = "hourly"
    VISIT_FEE = "visit_fee"
    UNKNOWN = "unknown"


class Event(msgspec.Struct, kw_only=True, frozen=True, tag_field="type"):
    """Fields every event carries."""

    event_id: str
    job_id: Id
    occurred_at: datetime = msgspec.field(default_factory=utcnow)
    v: int = 1


class ProviderEvent(Event, frozen=True):
    """An event about one provider of the job: it is published on that provider's subject and folds into that
    provider's state (see `fanout.py`). Not on the wire itself: only its subclasses are.

    The fields below are positional (not keyword-only like `Event`'s), so on the wire and in the schema they
    come first, exactly where each event declared them before this base existed.
    """

    provider_id: Id


class AttemptEvent(ProviderEvent, frozen=True):
    """An event about one dial attempt of a provider (attempts are numbered across rounds)."""

    attempt: int


class CallEvent(AttemptEvent, frozen=True):
    """An event about one placed call: Twilio's call SID is known."""

    call_sid: str


class ProviderSpec(msgspec.Struct, kw_only=True, frozen=True):
    """One provider to call, with optional per-provider overrides of the job's fields.

    `id` is the `providers` table's primary key, so it must be unique across jobs (the API generates
    `p_<random>` ids); a JobStarted that reuses another job's provider id is not projected for that provider.
    """

    id: Id
    service_provider: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    phone_number: E164
    zip_code: str | None = None
    problem: str | None = None
    max_price: Money | None = None
    context_answers: str | None = None
    timezone: str | None = None  # IANA name; otherwise derived from the phone number


class JobStarted(Event, frozen=True, tag="JobStarted"):
    """Start (or re-start) a job. Self-contained, so any system can start a job by publishing it.

    Publishing it again for the same job is safe: nobody already dialed is dialed twice.
    """

    problem: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    zip_code: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    max_price: Annotated[float, msgspec.Meta(gt=0)]
    providers: Annotated[list[ProviderSpec], msgspec.Meta(min_length=1, max_length=1000)]
    context_answers: str = ""
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] | None = None  # None: dispatcher default
    source: str = "api"
    # Where the agent can hand a call to the homeowner (`transfer_to_homeowner`, docs/twilio-transfer.md)
    homeowner_phone: E164 | None = None


class JobCancelled(Event, frozen=True, tag="JobCancelled"):
    """Stop queued dials of a job; live calls finish."""

    reason: str = "cancelled by operator"


class DialScheduled(AttemptEvent, frozen=True, tag="DialScheduled"):
    """A dial attempt is queued: the first one when a job starts, later ones as scheduled retries."""

    attempt: Annotated[int, msgspec.Meta(ge=1)]  # narrows AttemptEvent.attempt; keeps its place
    not_before: datetime | None = None  # retries and calling-hours waits
    reason: str = "initial"
    max_attempts: int | None = None  # the retry policy the dispatcher resolved for this job
    # The negotiation round this attempt belongs to (1: first call; 2+: a callback planned by CallPlanned).
    # Attempts are numbered across rounds, so every attempt of a provider has its own number and keys.
    round: Annotated[int, msgspec.Meta(ge=1)] = 1


class CallDialed(CallEvent, frozen=True, tag="CallDialed"):
    """Twilio accepted the outbound call."""

    to: str
    round: int = 1


class DialFailed(AttemptEvent, frozen=True, tag="DialFailed"):
    """The dial request itself failed (Twilio REST error, bad number, configuration)."""

    reason: str
    code: int | None = None
    permanent: bool = True


class CallStatusChanged(CallEvent, frozen=True, tag="CallStatusChanged"):
    """A Twilio call-progress callback (or a status fetched while reconciling after an outage).

    `status` is Twilio's CallStatus: queued, initiated, ringing, in-progress, completed, busy,
    no-answer, canceled, failed.
    """

    status: str
    duration_s: float | None = None
    source: str = "callback"


class MachineDetected(CallEvent, frozen=True, tag="MachineDetected"):
    """Twilio's asynchronous answering-machine detection result (AnsweredBy)."""

    answered_by: str  # human, machine_start, machine_end_beep, ..., fax, unknown

    @property
    def is_machine(self) -> bool:
        return self.answered_by.startswith("machine") or self.answered_by == "fax"


class UtteranceTranscribed(CallEvent, frozen=True, tag="UtteranceTranscribed"):
    """One finished utterance. `seq` orders a call's utterances; `utterance_id` makes re-publishes idempotent.

    `revision` > 0: the speech-to-text revised a line after it was published. The event repeats the utterance's
    id and seq with the new text; the latest revision of an utterance replaces the earlier text (last writer
    wins per utterance), it is never a second line."""

    utterance_id: str
    seq: Annotated[int, msgspec.Meta(ge=0)]
    role: Role
    text: str
    spoken_at: datetime | None = None
    interrupted: bool = False
    revision: Annotated[int, msgspec.Meta(ge=0)] = 0


class QuoteRecorded(CallEvent, frozen=True, tag="QuoteRecorded"):
    """The realtime model called its `record_quote` tool. Evidence for the extractor, not the truth."""

    price: float | None
    price_type: PriceType = PriceType.UNKNOWN
    conditions: str = ""
    agreed: bool | None = None
    # What the price covers (None: not said); see contracts/haggle_contracts/scope.py.
    visit_fee: Money | None = None
    includes_parts: bool | None = None
    warranty: str | None = None
    earliest_availability: str | None = None
    final: bool = False  # the business called this price final / its best


class CallEnded(CallEvent, frozen=True, tag="CallEnded"):
    """The conversation is over. `reason`: end_call, provider_hangup, silence_timeout, max_duration,
    voicemail, realtime_error (the session dropped twice or could not reopen), twilio_stream_lost (the media
    socket closed without `stop`), protocol_error (a stream over its size, rate or malformed-frame limits),
    gateway_error, shutdown, ivr_stuck (a phone menu repeated after 0 was pressed), hold_timeout (on hold longer
    than HOLD_TIMEOUT_SECONDS); gateway_lost is what the extractor records when the gateway died first.
    `voicemail_left`: a voicemail message was played to the end (VOICEMAIL_ACTION=message)."""

    reason: str
    duration_s: float = 0.0
    utterances: int = 0
    voicemail_left: bool = False


class PriceExtracted(CallEvent, frozen=True, tag="PriceExtracted"):
    """The result of one call: did the provider agree, to what, and on what evidence."""

    outcome: Outcome
    agreed: bool
    price: float | None
    initial_quote: float | None = None
    price_type: PriceType = PriceType.UNKNOWN
    conditions: str = ""
    evidence: list[str] = msgspec.field(default_factory=list)
    method: str = "offline"  # "xai", "offline", "offline(fallback: <why>)"
    disagreement: str | None = None  # set when the methods disagree
    # What the price covers, from the call's last record_quote that said it (None: not said).
    visit_fee: Money | None = None
    includes_parts: bool | None = None
    warranty: str | None = None
    earliest_availability: str | None = None


class CallPlanned(ProviderEvent, frozen=True, tag="CallPlanned"):
    """The market strategy decided to call this provider in this round, and why (`market.next_calls`).

    `reason`: opening (no price known yet), informed (a real quote of the job exists and the call carries it),
    callback (a later round: another provider's real quote is below this one's), independent. `competitor` is
    the real quote the call carries; `shown` is its all-in price.
    """

    round: Annotated[int, msgspec.Meta(ge=1)]
    reason: str
    competitor: Quote | None = None
    shown: float | None = None
    strategy: str = "market"


class OfferDecided(CallEvent, frozen=True, tag="OfferDecided"):
    """The offer policy chose a move in a call (`offer_policy.decide`): its inputs and the decision.

    `facts` and `decision` are the policy's own `OfferFacts` and `Decision`, so a replay shows every number
    the policy saw and why it said what it said; `action`, `offer`, `say` and `reason` repeat the decision
    for readers that do not unpack it.
    """

    action: str
    round: int = 1
    offer: float | None = None
    say: str = ""
    reason: str = ""
    facts: OfferFacts | None = None
    decision: Decision | None = None


class BookingRequested(ProviderEvent, frozen=True, tag="BookingRequested"):
    """The homeowner asked to book this provider: call it back to confirm `price` and an appointment inside
    one of `windows` (as the homeowner wrote them, e.g. "Sat Jan 10, 8am-12pm"; empty: any time it offers).

    `request` counts this provider's booking requests (a failed booking can be requested again)."""

    price: Money
    windows: list[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]] = msgspec.field(default_factory=list)
    request: Annotated[int, msgspec.Meta(ge=1)] = 1


class BookingRecorded(CallEvent, frozen=True, tag="BookingRecorded"):
    """On a booking call the voice model called `record_booking`: whether the business confirmed the price and
    an appointment inside the homeowner's windows, and which appointment."""

    confirmed: bool
    appointment: str | None = None
    price: Money | None = None
    notes: str = ""


class CallPriced(CallEvent, frozen=True, tag="CallPriced"):
    """What one call attempt cost, published once per call after its final status (docs/call-cost.md).

    Two parts: Twilio's charge for the call, read from the Call resource once Twilio has filled it in (None when
    Twilio had not reported one within the pricer's wait: `twilio_price_missing` says why), and the realtime
    model's minutes at the operator's `REALTIME_PRICE_PER_MINUTE` at the time of pricing. `total` is their sum in
    `currency`; the event id is derived from the call sid, so a call is priced once whatever repeats."""

    currency: str = "USD"
    twilio_price: Money | None = None  # Twilio's charge (Twilio reports it as a debit; stored as a positive amount)
    twilio_price_missing: str | None = None
    billed_duration_s: float = 0.0  # Twilio's `duration` of the call (answered time), seconds
    realtime_minutes: Money = 0.0
    realtime_price_per_minute: Money = 0.0
    realtime_cost: Money = 0.0
    total: Money = 0.0


class CallRecorded(CallEvent, frozen=True, tag="CallRecorded"):
    """Twilio finished (or gave up on) a call's recording: its recording status callback (docs/twilio-recording.md).

    Only with `RECORD_CALLS=on`. Haggle keeps the recording's address, never the audio: `recording_url` is
    Twilio's media URL without an extension (append `.wav` or `.mp3`), readable with the account's credentials.
    `status` is Twilio's `RecordingStatus`: `completed`, or `absent`/`failed` with no audio (`error_code` says why)."""

    recording_sid: str
    status: str = "completed"
    recording_url: str | None = None
    duration_s: float | None = None
    channels: int | None = None  # 2: dual channel, each side of the call on its own channel
    source: str | None = None  # Twilio's RecordingSource, e.g. OutboundAPI, StartCallRecordingAPI
    error_code: int | None = None


class InboundCallReceived(CallEvent, frozen=True, tag="InboundCallReceived"):
    """A provider Haggle called phoned `TWILIO_PHONE_NUMBER` back, and the agent took the call: a new attempt in
    that provider's history, with the conversation so far and the quote as context (docs/twilio-inbound.md).
    Calls from numbers Haggle never called belong to no job and are not events (a log line and a metric)."""

    from_number: str


class HomeownerTransfer(CallEvent, frozen=True, tag="HomeownerTransfer"):
    """The agent handed the call to the homeowner (`transfer_to_homeowner`), and how it went (docs/twilio-transfer.md).

    `outcome`: `connected` (the homeowner answered, heard the one-line brief and was bridged), `not_reached`
    (no answer, busy or failed: the call went back to the agent, which closed politely; `dial_status` is Twilio's
    DialCallStatus), or `unavailable` (the job has no homeowner phone: the agent said the homeowner will call back)."""

    outcome: str
    dial_status: str | None = None
    duration_s: float | None = None


class OfferSummary(msgspec.Struct, kw_only=True, frozen=True):
    provider_id: str
    service_provider: str
    outcome: str | None
    price: float | None
    initial_quote: float | None
    saving: float | None
    visit_fee: float | None = None  # a call-out fee on top of `price`
    all_in: float | None = None  # price + visit_fee: what offers rank on


class JobCompleted(Event, frozen=True, tag="JobCompleted"):
    """Every provider of the job reached a terminal state. Carries the report sent to the results webhook."""

    offers: list[OfferSummary]
    best_provider_id: str | None = None
    best_price: float | None = None


class DeadLetter(msgspec.Struct, kw_only=True, frozen=True):
    """Not an event: the body published on the dead-letter subject for a message a consumer could not use."""

    consumer: str
    subject: str
    reason: str
    stream_seq: int | None = None
    body: str  # the original bytes, decoded as UTF-8 with replacement


AnyEvent = (
    JobStarted
    | JobCancelled
    | DialScheduled
    | CallDialed
    | DialFailed
    | CallStatusChanged
    | MachineDetected
    | UtteranceTranscribed
    | QuoteRecorded
    | CallEnded
    | PriceExtracted
    | JobCompleted
    | CallPlanned
    | OfferDecided
    | BookingRequested
    | BookingRecorded
    | CallPriced
    | CallRecorded
    | InboundCallReceived
    | HomeownerTransfer
)

ALL_EVENTS: tuple[type[Event], ...] = get_args(AnyEvent)  # one list: a new event is added to AnyEvent only

# The newest schema version each event type has; a higher `v` on the wire is dead-lettered.
CURRENT_VERSION: dict[str, int] = {cls.__struct_config__.tag: 1 for cls in ALL_EVENTS}  # type: ignore[misc]

TERMINAL_TWILIO_STATUSES = frozenset({"completed", "busy", "no-answer", "canceled", "failed"})
UNANSWERED_OUTCOMES: dict[str, Outcome] = {
    "busy": Outcome.BUSY,
    "no-answer": Outcome.NO_ANSWER,
    "canceled": Outcome.NO_ANSWER,
    "failed": Outcome.FAILED,
}
RETRYABLE_OUTCOMES = frozenset({Outcome.BUSY, Outcome.NO_ANSWER, Outcome.VOICEMAIL})
