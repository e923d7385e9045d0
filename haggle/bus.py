"""The event bus: connecting to NATS, declaring the JetStream topology, publishing and replaying events.

Publishing uses the event id as `Nats-Msg-Id`, so a publish retried after a timeout (or a NATS restart)
is stored once. Replay reads a subject filter from the first message to the last one that existed
when the replay began, which is what an audit wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats
from haggle_contracts import codec, subjects, text
from haggle_contracts import events as ev
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, KeyNotFoundError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue

from .config import ConfigError
from .logs import mask_urls

log = logging.getLogger(__name__)


class NatsUnreachable(ConfigError):
    """NATS did not answer at start within the deadline (a ConfigError: the CLI prints it as one line)."""


async def connect(
    url: str, *, name: str = "haggle", deadline_s: float = 30.0, creds: str | None = None
) -> NatsClient:
    """A connection that keeps reconnecting for as long as the process lives (services outlive NATS restarts).

    The first connection is bounded by `deadline_s`: a service whose NATS is not there at start fails with
    one clear line (the URL's password masked) instead of hanging with no port and no health endpoint.
    `creds` is a NATS credentials file (NATS_CREDS); user and password can also ride in the URL."""
    nc = NatsClient()

    async def on_error(exc: Exception) -> None:
        log.warning("nats connection error: %s", exc)

    async def on_disconnect() -> None:
        if not (nc.is_closed or nc.is_draining):  # a deliberate close is not news
            log.warning("nats disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    connecting = nc.connect(
        [u.strip() for u in url.split(",") if u.strip()],  # a cluster: several seed URLs
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        connect_timeout=min(5.0, deadline_s),
        allow_reconnect=True,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        user_credentials=creds,
    )
    try:
        await asyncio.wait_for(connecting, deadline_s)
    except Exception as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        why = "no answer" if isinstance(exc, TimeoutError) else mask_urls(str(exc) or type(exc).__name__)
        raise NatsUnreachable(f"NATS unreachable at {mask_urls(url)} after {deadline_s:.0f}s ({why}); "
                              "check NATS_URL (and NATS_CREDS)") from None
    return nc


@dataclass(frozen=True)
class TopologyOptions:
    max_age_s: float = subjects.StreamSpec.max_age_s
    replicas: int = 1
    calls_ttl_s: float | None = None  # call contexts' lifetime; None: the stream's max age


def kv_ttls(opts: TopologyOptions) -> dict[str, float]:
    """How long each bucket keeps an entry after its last write: nothing outlives the log it describes (the
    stream's max age), and call contexts (tokens, numbers, problems) live only as long as a call can."""
    ttls = dict.fromkeys(subjects.KV_BUCKETS, opts.max_age_s)
    if opts.calls_ttl_s is not None:
        ttls[subjects.KV_CALLS] = min(opts.calls_ttl_s, opts.max_age_s)
    return ttls


async def ensure_topology(js: JetStreamContext, opts: TopologyOptions | None = None) -> None:
    """Create or update the stream, the durable consumers and the KV buckets (idempotent; any service may run it)."""
    opts = opts or TopologyOptions()
    spec = subjects.StreamSpec(max_age_s=opts.max_age_s, replicas=opts.replicas)
    config = StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=spec.max_age_s,
        num_replicas=spec.replicas,
        duplicate_window=spec.duplicate_window_s,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)
    for consumer in subjects.CONSUMERS.values():
        await ensure_consumer(js, consumer, replicas=opts.replicas)
    for bucket, ttl in kv_ttls(opts).items():
        await _ensure_bucket(js, bucket, ttl, opts.replicas)


async def _ensure_bucket(js: JetStreamContext, bucket: str, ttl: float, replicas: int) -> None:
    try:
        await js.key_value(bucket)
    except NotFoundError:
        try:
            await js.create_key_value(
                KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE, replicas=replicas, ttl=ttl)
            )
            return
        except BadRequestError:
            await js.key_value(bucket)  # another service created it a moment ago
    # A bucket made by an older build (no TTL) or under another STREAM_MAX_AGE_SECONDS: its stream's max age is the TTL.
    info = await js.stream_info(f"KV_{bucket}")
    if abs((info.config.max_age or 0) - ttl) > 1:
        info.config.max_age = ttl
        info.config.duplicate_window = min(info.config.duplicate_window or ttl, ttl)  # the server requires it
        await js.update_stream(info.config)


async def kv_read(kv: KeyValue, key: str) -> tuple[bytes | None, int | None]:
    """A KV entry's value and revision, or (None, None) when the key is absent (the revision feeds CAS updates)."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, None
    return entry.value, entry.revision


async def ensure_consumer(js: JetStreamContext, spec: subjects.ConsumerSpec, *, replicas: int = 1) -> None:
    filters = list(spec.filter_subjects)
    config = ConsumerConfig(
        durable_name=spec.durable,
        description=spec.description,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        num_replicas=replicas,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
    )
    await js.add_consumer(subjects.STREAM, config)


TRANSIENT_ERRORS = (
    TimeoutError,
    NatsTimeoutError,
    NoRespondersError,
    ServiceUnavailableError,  # 503 while a JetStream cluster elects a new leader after losing a node
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
)
"""Errors a JetStream call can give while NATS restarts, reconnects or fails over; worth retrying."""

T = TypeVar("T")


async def retry_transient(op: Callable[[], Awaitable[T]], *, deadline_s: float, what: str) -> T:
    """Run `op`, retrying TRANSIENT_ERRORS with backoff for up to `deadline_s`; the last error is raised after that.

    A cluster that loses a node answers 503 or times out for several seconds while it elects leaders; a
    webhook or publish that gives up at the first error would turn that hiccup into a lost call event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    delay = 0.05
    while True:
        try:
            return await op()
        except TRANSIENT_ERRORS as exc:
            if loop.time() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying", what, exc or type(exc).__name__)
            await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
            delay = min(delay * 2, 1.0)


class SubjectNotNew(Exception):
    """A publish that expected its subject to be empty found a message there (e.g. the job id is taken)."""


# JetStream's "wrong last sequence" answer to Nats-Expected-Last-Subject-Sequence.
_WRONG_LAST_SEQUENCE = 10071


class Publisher:
    """Publishes events durably. Retries through timeouts and NATS restarts; the msg id makes retries safe."""

    def __init__(self, js: JetStreamContext, *, deadline_s: float = 60.0) -> None:
        self.js = js
        self.deadline_s = deadline_s

    async def publish(self, event: ev.Event, *, first_on_subject: bool = False) -> int:
        """Store the event on the stream; returns its stream sequence (of the first copy when deduplicated).

        `first_on_subject`: the stream itself refuses the event (SubjectNotNew) when its subject already holds a
        message, so two publishers racing for one job id cannot both succeed (the log is the truth, not a
        projection that may lag). A retry of the same event is still deduplicated by its msg id first.

        Text against the rule (`haggle_contracts.text`: a control character in a transcript, an over-long quote)
        is fitted to it here, with a warning: our own producers never store an event every consumer would
        dead-letter. The API validates what people send before it gets this far."""
        reason = text.event_problem(event)
        if reason is not None:  # every consumer would dead-letter it: store what the text rule allows instead
            log.warning("%s %s: %s; publishing it with that text fitted to the rule",
                        type(event).__name__, event.event_id, reason)
            event = text.fitted_event(event)
        subject = subjects.subject_for(event)
        data = codec.encode(event)
        headers = {"Nats-Msg-Id": event.event_id}
        if first_on_subject:
            headers["Nats-Expected-Last-Subject-Sequence"] = "0"

        async def once() -> int:
            try:
                return (await self.js.publish(subject, data, headers=headers, timeout=2.0)).seq
            except APIError as exc:
                if exc.err_code == _WRONG_LAST_SEQUENCE:
                    # A retry after a lost answer (a timeout under load) meets our own first copy: that is success.
                    mine = await self._own_copy(subject, event.event_id)
                    if mine is not None:
                        return mine
                    raise SubjectNotNew(f"{subject} already holds a message") from exc
                raise

        what = f"publish of {type(event).__name__} on {subject}"
        return await retry_transient(once, deadline_s=self.deadline_s, what=what)


    async def _own_copy(self, subject: str, event_id: str) -> int | None:
        """The stream sequence of the subject's message when it is this event (same msg id), else None."""
        with contextlib.suppress(Exception):
            last = await self.js.get_last_msg(subjects.STREAM, subject)
            if (last.headers or {}).get("Nats-Msg-Id") == event_id:
                return int(last.seq)
        return None


class ReplayIncomplete(RuntimeError):
    """The stream stopped delivering before the end of a replay; the caller retries rather than act on part of it."""


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    subject: str
    event: ev.Event | None
    error: str | None = None
    raw: bytes = b""


async def replay(js: JetStreamContext, subject_filter: str, *, batch: int = 256) -> AsyncIterator[StoredEvent]:
    """Every stored message matching the filter, in stream order, up to the end of the stream at call time."""
    psub = await js.pull_subscribe(
        subject_filter,
        durable=None,
        stream=subjects.STREAM,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        ),
    )
    try:
        info = await psub.consumer_info()
        remaining = info.num_pending
        stalls = 0
        while remaining > 0:
            try:
                msgs: list[Msg] = await psub.fetch(min(batch, remaining), timeout=2.0)
            except NatsTimeoutError as exc:
                # A cluster that just lost a node can stall for a moment. Never hand back a partial history
                # as if it were whole: decisions (retries, job completion) are made from it.
                stalls += 1
                if stalls >= 10:
                    raise ReplayIncomplete(f"replay of {subject_filter} stalled with {remaining} left") from exc
                continue
            stalls = 0
            for msg in msgs:
                remaining = msg.metadata.num_pending
                yield _stored(msg)
    finally:
        try:
            await psub.unsubscribe()
        except Exception:  # the ephemeral consumer expires on its own
            pass


def decode_message(subject: str, data: bytes) -> ev.AnyEvent:
    """An event as every reader of the log must see it: decodable, within the text rule (`haggle_contracts.text`),
    and published on the subject its body names. A JobStarted on `haggle.job.A.started` whose body says job B
    would otherwise start B with no JobStarted in B's history, so it is refused like a malformed body."""
    event = codec.decode(data)
    expected = subjects.subject_for(event)
    if subject != expected:
        raise codec.EventDecodeError(f"subject {subject} does not match the body, which belongs on {expected}")
    reason = text.event_problem(event)
    if reason is not None:
        raise codec.EventDecodeError(f"invalid {type(event).__name__}: {reason}")
    return event


def _stored(msg: Msg) -> StoredEvent:
    seq = msg.metadata.sequence.stream
    try:
        return StoredEvent(seq=seq, subject=msg.subject, event=decode_message(msg.subject, msg.data), raw=msg.data)
    except codec.EventDecodeError as exc:
        return StoredEvent(seq=seq, subject=msg.subject, event=None, error=str(exc), raw=msg.data)


async def job_history(js: JetStreamContext, job_id: str) -> list[ev.Event]:
    """The decodable events of one job, in log order (malformed ones are the dead-letter path's business)."""
    return [s.event async for s in replay(js, subjects.job_filter(job_id)) if s.event is not None]
