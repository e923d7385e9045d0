"""Subject names and the JetStream objects (stream, consumers, key-value buckets) Haggle uses.

This module is the one place that knows subject layout. Every job-scoped subject starts with
`haggle.job.<job_id>.`, so `haggle.job.<job_id>.>` replays one job's whole history:

    haggle.job.<job>.started | .cancelled | .completed
    haggle.job.<job>.provider.<provider>.<kind>     kind: see PROVIDER_KINDS
    haggle.deadletter.<consumer>                    messages a consumer could not use
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import events as ev

PREFIX = "haggle"
STREAM = "HAGGLE"
DEADLETTER_PREFIX = f"{PREFIX}.deadletter"

# Event type -> last subject token.
JOB_KINDS: dict[type[ev.Event], str] = {
    ev.JobStarted: "started",
    ev.JobCancelled: "cancelled",
    ev.JobCompleted: "completed",
}
PROVIDER_KINDS: dict[type[ev.Event], str] = {
    ev.DialScheduled: "dial_scheduled",
    ev.CallDialed: "dialed",
    ev.DialFailed: "dial_failed",
    ev.CallStatusChanged: "status",
    ev.MachineDetected: "amd",
    ev.UtteranceTranscribed: "utterance",
    ev.QuoteRecorded: "quote",
    ev.CallEnded: "ended",
    ev.PriceExtracted: "price",
    ev.CallPlanned: "planned",
    ev.OfferDecided: "offer",
    ev.BookingRequested: "booking_requested",
    ev.BookingRecorded: "booking",
    ev.CallPriced: "priced",
    ev.CallRecorded: "recorded",
    ev.InboundCallReceived: "inbound",
    ev.HomeownerTransfer: "transfer",
}


def subject_for(event: ev.Event) -> str:
    """The subject an event is published on."""
    kind = JOB_KINDS.get(type(event))
    if kind is not None:
        return f"{PREFIX}.job.{event.job_id}.{kind}"
    if not isinstance(event, ev.ProviderEvent):
        raise KeyError(f"{type(event).__name__} has no subject: neither a job event nor a ProviderEvent")
    return f"{PREFIX}.job.{event.job_id}.provider.{event.provider_id}.{PROVIDER_KINDS[type(event)]}"


def job_filter(job_id: str) -> str:
    """Subject filter for one job's whole history."""
    return f"{PREFIX}.job.{job_id}.>"


def all_jobs_filter() -> str:
    return f"{PREFIX}.job.>"


def job_event_filter(kind: str) -> str:
    """E.g. `job_event_filter("started")` -> every job's JobStarted."""
    return f"{PREFIX}.job.*.{kind}"


def provider_event_filter(kind: str) -> str:
    """E.g. `provider_event_filter("ended")` -> every call's CallEnded."""
    return f"{PREFIX}.job.*.provider.*.{kind}"


def deadletter_subject(consumer: str) -> str:
    return f"{DEADLETTER_PREFIX}.{consumer}"


@dataclass(frozen=True)
class StreamSpec:
    """The one durable event stream. Limits-based retention: events stay for audits until `max_age_s`."""

    name: str = STREAM
    subjects: tuple[str, ...] = (f"{PREFIX}.>",)
    max_age_s: float = 365 * 24 * 3600.0
    replicas: int = 1
    duplicate_window_s: float = 120.0


# Deliveries a message gets before its consumer dead-letters it: a handler bug (or a crash loop on one message)
# ends on the dead-letter subject with the reason instead of retrying forever. `Later` waits count as
# deliveries too, so it is far above the waits a message legitimately makes (calling hours: one per hour).
MAX_DELIVER = 100


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer; replicas of a service share it and split its messages.

    `max_deliver` -1 means no limit: only the projector has it, because its in-place retries must outlast a
    store outage (the log is applied in order; skipping an event would corrupt every row after it), and events
    the store can never accept are dead-lettered by the projector itself."""

    durable: str
    filter_subjects: tuple[str, ...]
    ack_wait_s: float = 30.0
    max_deliver: int = MAX_DELIVER
    max_ack_pending: int = 1000
    description: str = ""


CONSUMERS: dict[str, ConsumerSpec] = {
    spec.durable: spec
    for spec in (
        ConsumerSpec(
            "projector",
            (all_jobs_filter(),),
            # One message in flight: after a crash the unacked message is redelivered before anything newer,
            # so the log is applied in order (see EventConsumer's `ordered`). A short ack_wait keeps the
            # restart quick; in-place retries send in_progress to hold the message longer.
            ack_wait_s=3.0,
            max_ack_pending=1,
            max_deliver=-1,
            description="Materializes provider rows from every job event.",
        ),
        ConsumerSpec(
            "dispatcher-jobs",
            (job_event_filter("started"), job_event_filter("cancelled")),
            ack_wait_s=10.0,
            description="Turns JobStarted into the first calls (all at once, or the market's first plan).",
        ),
        ConsumerSpec(
            "dispatcher-bookings",
            (provider_event_filter("booking_requested"),),
            ack_wait_s=10.0,
            description="Turns BookingRequested into a call back to the provider to confirm price and appointment.",
        ),
        ConsumerSpec(
            "dispatcher-dials",
            (provider_event_filter("dial_scheduled"),),
            ack_wait_s=10.0,  # a dead dispatcher's dials come back quickly; live ones send in_progress
            description="Places scheduled dials with Twilio, honouring caps, pacing and calling hours.",
        ),
        ConsumerSpec(
            "dispatcher-outcomes",
            (
                provider_event_filter("status"),
                provider_event_filter("dial_failed"),
                provider_event_filter("price"),
            ),
            ack_wait_s=10.0,
            description="Frees call slots, decides retries, and (market) plans the next calls and rounds.",
        ),
        ConsumerSpec(
            "extractor",
            (provider_event_filter("ended"), provider_event_filter("status")),
            ack_wait_s=120.0,
            description="Extracts the price from each ended call's transcript.",
        ),
        ConsumerSpec(
            "call-cost",
            (provider_event_filter("status"),),
            # Twilio may fill in a call's price a while after the call ends: the pricer holds the message
            # (in_progress) while it asks again.
            ack_wait_s=30.0,
            description="Prices each call once its status is final: Twilio's charge plus realtime minutes.",
        ),
        ConsumerSpec(
            "reporter",
            (job_event_filter("completed"),),
            description="POSTs each job's report to RESULTS_WEBHOOK_URL (once per job).",
        ),
        ConsumerSpec(
            "job-completion",
            (provider_event_filter("price"), provider_event_filter("dial_failed"), provider_event_filter("status")),
            description="Publishes JobCompleted when no provider is being called and no round can improve the best.",
        ),
    )
}

KV_CALLS = "haggle_calls"  # call context by call id, written by the dispatcher before dialing
KV_DIALS = "haggle_dials"  # one key per dial attempt: the guard that nobody is dialed twice
KV_LIMITS = "haggle_limits"  # call slots and pacing shared by dispatcher replicas
KV_REPORTS = "haggle_reports"  # which job reports the results webhook has received
KV_IDS = "haggle_ids"  # provider ids taken by a job (key `provider.<id>`, value the job id): created, never overwritten
# The job and provider behind each number the gateway called (key `phone.<digits>`, latest call wins): who a
# callback to TWILIO_PHONE_NUMBER is from.
KV_CALLERS = "haggle_callers"
KV_BUCKETS = (KV_CALLS, KV_DIALS, KV_LIMITS, KV_REPORTS, KV_IDS, KV_CALLERS)


@dataclass(frozen=True)
class Topology:
    stream: StreamSpec = field(default_factory=StreamSpec)
    consumers: dict[str, ConsumerSpec] = field(default_factory=lambda: dict(CONSUMERS))
    kv_buckets: tuple[str, ...] = KV_BUCKETS
