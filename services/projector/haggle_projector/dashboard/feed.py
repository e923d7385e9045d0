"""The live feed of one job as server-sent events: the stored history first, then live events from NATS.

Each event becomes an `item` (a timeline line, with the utterance when it is one). The feed also folds
the events with the same `haggle_contracts.state` fold the projector stores, and sends the provider
rows it changed (`row`) and, when an outcome may have changed, the job status and best offer (`job`),
already formatted by `templates.cells`, so the page never re-implements the fold or the wording.

Live events come from a core NATS subscription (JetStream publishes are visible to it), opened before
the replay so nothing published in between is missed; duplicates (replayed and live, or a publish
retried) are dropped by event id. A comment line every `heartbeat_s` keeps proxies from closing an idle
stream and reveals a gone client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import msgspec
import nats.errors
from haggle_contracts import codec, fanout, subjects
from haggle_contracts import events as ev
from haggle_contracts import state as st
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from haggle import bus
from haggle.audit import detail

from ..api import job_doc, provider_doc
from ..stores.columns import summarize_jobs
from .templates.call import recording_view
from .templates.cells import clock, job_summary_view, job_view, offset, row_view

log = logging.getLogger(__name__)

MAX_FOLDED_JOBS = 500  # the jobs feed forgets the least recently touched job beyond this (it re-reads it if needed)
MAX_QUEUED = 10_000  # a client this far behind is dropped; its browser reconnects and replays
CHUNK_BYTES = 32 * 1024
STOP = None  # queued to end every open feed when the service stops


def sse(kind: str, data: dict[str, Any], *, event_id: int | None = None) -> str:
    """One server-sent event. Compact JSON has no raw newlines, so one `data:` line is enough."""
    head = f"event: {kind}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head + "data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n\n"


def utterance_view(u: st.Utterance | ev.UtteranceTranscribed, start: datetime | None = None) -> dict[str, Any]:
    """An utterance for the chat. `at` is its clock time (UTC) and `offset` how far into its call attempt it was
    spoken (from `start`, when the call was answered), both empty when the gateway gave no time."""
    spoken = u.spoken_at
    return {"id": u.utterance_id, "attempt": u.attempt, "seq": u.seq, "role": str(u.role), "text": u.text,
            "interrupted": u.interrupted, "at": clock(spoken) if spoken else "",
            "offset": offset(spoken - start) if spoken and start else ""}


class JobFold:
    """A job's provider states, folded event by event exactly as `state.fold_job` folds a list."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.states: dict[str, st.ProviderState] = {}
        self.problem = ""
        # When each call attempt was answered (or first spoke): the zero of its transcript's timings.
        self.starts: dict[tuple[str, int], datetime] = {}

    def apply(self, event: ev.Event) -> tuple[set[str], bool]:
        """Apply one event; returns the providers whose rows changed and whether an outcome may have moved."""
        before = {pid: self._key(s) for pid, s in self.states.items()}
        self._note_start(event)
        changed: set[str] = set()
        if isinstance(event, ev.JobStarted):
            self.problem = event.problem
        for pid, spec in fanout.targets(event, list(self.states)):
            result = st.apply(self.states.get(pid), event, spec)
            if result is not None:
                self.states[pid] = result
                changed.add(pid)
        settled = any(before.get(pid) != self._key(self.states[pid]) for pid in changed)
        return changed, settled

    def _note_start(self, event: ev.Event) -> None:
        answered = isinstance(event, ev.CallStatusChanged) and event.status in ("in-progress", "answered")
        if answered or isinstance(event, ev.UtteranceTranscribed):
            key = (event.provider_id, event.attempt)  # type: ignore[attr-defined]
            when = event.spoken_at if isinstance(event, ev.UtteranceTranscribed) else event.occurred_at
            if when is not None and (key not in self.starts or when < self.starts[key]):
                self.starts[key] = when

    def start_of(self, provider_id: str, attempt: int) -> datetime | None:
        return self.starts.get((provider_id, attempt))

    @staticmethod
    def _key(s: st.ProviderState) -> tuple[object, ...]:
        return (s.call_status, s.outcome, s.negotiated_price, s.initial_quote, s.cost)  # cost: the job's cost line

    def name(self, provider_id: str) -> str:
        s = self.states.get(provider_id)
        return s.service_provider if s else ""

    def item(self, event: ev.Event, seq: int | None) -> dict[str, Any]:
        provider_id = fanout.provider_of(event)
        out: dict[str, Any] = {
            "id": event.event_id,
            "seq": seq,
            "type": type(event).__name__,
            "at": clock(event.occurred_at),
            "provider_id": provider_id,
            "who": self.name(provider_id) if provider_id else "",
            "text": detail(event),
        }
        if isinstance(event, ev.UtteranceTranscribed):
            out["utterance"] = utterance_view(event, self.start_of(event.provider_id, event.attempt))
        if isinstance(event, ev.CallRecorded):
            out["recording"] = recording_view(self.job_id, event.provider_id, {
                "attempt": event.attempt, "recording_sid": event.recording_sid, "status": event.status,
                "url": event.recording_url, "duration_s": event.duration_s, "channels": event.channels})
        return out

    def row(self, provider_id: str) -> dict[str, Any]:
        return row_view(provider_doc(self.states[provider_id]))

    def job(self) -> dict[str, Any]:
        return job_view(job_doc(self.job_id, list(self.states.values())))


async def _batches(queue: asyncio.Queue[Any], hub: FeedHub, heartbeat_s: float) -> AsyncIterator[list[Any] | None]:
    """What a feed has to send: every message queued so far as one batch, or None after `heartbeat_s` of quiet
    (time for a keep-alive). Ends when the hub closes or STOP is queued."""
    while not hub.closed:
        try:
            first = await asyncio.wait_for(queue.get(), heartbeat_s)
        except TimeoutError:
            yield None
            continue
        batch = [first]
        while not queue.empty():
            batch.append(queue.get_nowait())
        if STOP in batch:
            return
        yield batch


def _wanted(event: ev.Event, provider: str | None) -> bool:
    return provider is None or fanout.provider_of(event) in (None, provider)


class FeedHub:
    """The open feeds of one service, so stopping the service can end them (uvicorn waits for open responses)."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[Msg | None]] = set()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for queue in self.queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(STOP)


@contextlib.asynccontextmanager
async def _live(nc: NatsClient, hub: FeedHub, subject: str) -> AsyncIterator[asyncio.Queue[Msg | None]]:
    """The live messages on `subject`, queued for one feed while it is open (and known to `hub`).

    A feed that falls MAX_QUEUED behind gets STOP instead of more: it ends and its browser reconnects."""
    queue: asyncio.Queue[Msg | None] = asyncio.Queue(maxsize=MAX_QUEUED + 1)

    async def on_msg(msg: Msg) -> None:
        if queue.qsize() >= MAX_QUEUED:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(STOP)
            return
        queue.put_nowait(msg)

    sub = await nc.subscribe(subject, cb=on_msg)
    hub.queues.add(queue)
    try:
        yield queue
    finally:
        hub.queues.discard(queue)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def job_feed(nc: NatsClient, js: JetStreamContext, hub: FeedHub, job_id: str, *,
                   provider: str | None = None, heartbeat_s: float = 15.0) -> AsyncIterator[str]:
    """The SSE body for one job (or one provider's call when `provider` is given)."""
    async with _live(nc, hub, subjects.job_filter(job_id)) as queue:
        fold = JobFold(job_id)
        seen: set[str] = set()
        out: list[str] = ["retry: 2000\n\n"]
        size = 0
        async for stored in bus.replay(js, subjects.job_filter(job_id)):
            if stored.event is None:
                log.warning("feed %s: unreadable event at seq %d: %s", job_id, stored.seq, stored.error)
                continue
            seen.add(stored.event.event_id)
            fold.apply(stored.event)
            if _wanted(stored.event, provider):
                line = sse("item", fold.item(stored.event, stored.seq), event_id=stored.seq)
                out.append(line)
                size += len(line)
                if size >= CHUNK_BYTES:
                    yield "".join(out)
                    out, size = [], 0
        for pid in fold.states:
            if provider is None or pid == provider:
                out.append(sse("row", fold.row(pid)))
        if provider is None:
            out.append(sse("job", fold.job()))
        out.append(sse("ready", {"job_id": job_id, "providers": len(fold.states)}))
        yield "".join(out)

        async for batch in _batches(queue, hub, heartbeat_s):
            if batch is None:
                yield ": keep-alive\n\n"
                continue
            changed: set[str] = set()
            settled = False
            out = []
            for msg in batch:
                assert msg is not None
                try:
                    event = codec.decode(msg.data)
                except codec.EventDecodeError as exc:
                    log.warning("feed %s: unreadable live event on %s: %s", job_id, msg.subject, exc)
                    continue
                if event.event_id in seen:
                    continue
                seen.add(event.event_id)
                rows, moved = fold.apply(event)
                changed |= rows
                settled |= moved
                if _wanted(event, provider):
                    out.append(sse("item", fold.item(event, None)))
            out.extend(sse("row", fold.row(pid)) for pid in fold.states
                       if pid in changed and (provider is None or pid == provider))
            if settled and provider is None:
                out.append(sse("job", fold.job()))
            if out:
                yield "".join(out)


def job_summary(job_id: str, states: list[st.ProviderState]) -> dict[str, Any] | None:
    """A jobs-list row from a job's folded states, summarised exactly as the store summarises its rows."""
    rows = [msgspec.structs.asdict(s) for s in states]
    summaries = summarize_jobs(rows, 1)
    return job_summary_view(summaries[0]) if summaries else None


class _FoldedJob:
    def __init__(self, job_id: str) -> None:
        self.fold = JobFold(job_id)
        self.seen: set[str] = set()


async def jobs_feed(nc: NatsClient, js: JetStreamContext, hub: FeedHub, *,
                    heartbeat_s: float = 15.0) -> AsyncIterator[str]:
    """The SSE body of the jobs list: a `jobrow` each time an event changes a job's summary.

    The list itself is server-rendered from the store, which trails the log; the feed folds a job from its
    history on the first live event that touches it (so a row is right even when the store had not caught up),
    then applies live events on top, dropping the ones the history already held."""
    jobs: dict[str, _FoldedJob] = {}
    async with _live(nc, hub, subjects.all_jobs_filter()) as queue:
        yield "retry: 2000\n\n" + sse("ready", {"page": "jobs"})
        async for batch in _batches(queue, hub, heartbeat_s):
            if batch is None:
                yield ": keep-alive\n\n"
                continue
            touched: dict[str, list[ev.Event]] = {}
            for msg in batch:
                assert msg is not None
                try:
                    event = codec.decode(msg.data)
                except codec.EventDecodeError as exc:
                    log.warning("jobs feed: unreadable live event on %s: %s", msg.subject, exc)
                    continue
                touched.setdefault(event.job_id, []).append(event)
            out = []
            for job_id, live in touched.items():
                job = jobs.pop(job_id, None)
                if job is None:
                    job = _FoldedJob(job_id)
                    try:
                        history = await bus.job_history(js, job_id)
                    except (TimeoutError, OSError, nats.errors.Error) as exc:
                        log.warning("jobs feed: the history of %s is unavailable (%s)", job_id, exc)
                        history = []
                    for event in history:
                        job.seen.add(event.event_id)
                        job.fold.apply(event)
                for event in live:
                    if event.event_id not in job.seen:
                        job.seen.add(event.event_id)
                        job.fold.apply(event)
                jobs[job_id] = job  # most recently touched last
                while len(jobs) > MAX_FOLDED_JOBS:
                    jobs.pop(next(iter(jobs)))
                row = job_summary(job_id, list(job.fold.states.values()))
                if row is not None:
                    out.append(sse("jobrow", row))
            if out:
                yield "".join(out)
