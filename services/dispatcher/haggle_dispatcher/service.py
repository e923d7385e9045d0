"""The dispatcher's logic: jobs become scheduled dials; dials become Twilio calls; outcomes become retries.

Three durable consumers (see `haggle_contracts.subjects.CONSUMERS`), each safe to run on several
replicas at once:
- jobs: JobStarted -> the first calls. `independent`: one DialScheduled per provider at once. `market`: the
  job's log is folded and `decisions.plan_calls` (the market's `next_calls`) says whom to call now; each
  planned call is a CallPlanned (why, which round, which real quote it carries) and its DialScheduled.
  Both are guarded in KV, so a re-started job dials nobody twice;
- dials: DialScheduled -> wait for its time, the calling window, a call slot and a pacing turn, then dial;
- outcomes: a terminal call status frees the slot; the folded state says whether a retry is due
  (`decisions.next_dial`); in `market`, every settling outcome re-plans (staggered first round, callbacks).

All state lives in JetStream (the log and the `haggle_dials` / `haggle_limits` KV buckets), so a
dispatcher can be killed at any point and another (or the same, restarted) carries on. Nothing is cached
in memory: the job record is read from KV on every use and merged with compare-and-set on its revision, so
a replica never answers from a copy another replica has since changed.

Twilio trouble never fails a provider early: 429 and 5xx answers and timeouts are retried (honouring
`Retry-After`) for up to DIAL_RETRY_WINDOW_SECONDS, and a create whose answer was lost is looked up at
Twilio before any new create, so one attempt never rings a provider twice (docs/twilio-rest.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from haggle_contracts import codec, decisions, ids, subjects
from haggle_contracts import events as ev
from haggle_contracts import state as st
from haggle_contracts.calls import BookingBrief, CallContext, ctx_key, decode_context, encode_context
from haggle_contracts.market import MarketPolicy
from haggle_contracts.scope import Quote
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from haggle import bus
from haggle.bus import Publisher, kv_read
from haggle.consumer import Delivery, Later
from haggle.metrics import DIALS
from haggle.settings_table import DEFAULTS

from . import policy
from .limits import SharedLimits
from .twilio_dialer import DialError, DialRequest, TwilioDialer

log = logging.getLogger(__name__)


INDEPENDENT = MarketPolicy(strategy="independent")


@dataclass(frozen=True)
class DispatcherSettings:
    twilio_phone_number: str
    public_base_url: str
    max_concurrent_calls: int = DEFAULTS["max_concurrent_calls"]
    calls_per_second: float = DEFAULTS["calls_per_second"]
    max_call_attempts: int = DEFAULTS["max_call_attempts"]
    retry_delay_s: float = DEFAULTS["retry_delay_s"]
    calling_hours: tuple | None = None  # (time, time) or None for any time; a service built in code calls any time
    ring_timeout_s: int = DEFAULTS["ring_timeout_s"]
    call_time_limit_s: int = DEFAULTS["call_time_limit_s"]
    dial_retry_window_s: float = DEFAULTS["dial_retry_window_s"]
    # How the job negotiates. The service default is `independent` (every provider at once); the environment's
    # NEGOTIATION_STRATEGY default is `market` (haggle/config.py).
    market: MarketPolicy = INDEPENDENT


class PlanRecord(msgspec.Struct, kw_only=True):
    """KV record of one planned call (`plan.<job>.<provider>.<round>`): the guard that it is placed once, and
    what its call context carries (the competing quote, and what the provider and we said in earlier calls)."""

    planned: ev.CallPlanned
    dial: ev.DialScheduled
    their_prices: list[float] = msgspec.field(default_factory=list)
    our_offers: list[float] = msgspec.field(default_factory=list)
    cited: list[float] = msgspec.field(default_factory=list)
    published: bool = False


def plan_key(job_id: str, provider_id: str, round_: int) -> str:
    return f"plan.{job_id}.{provider_id}.{round_}"


def booking_key(job_id: str, provider_id: str, round_: int) -> str:
    """The booking a round's call confirms (its dials read it for the call context)."""
    return f"book.{job_id}.{provider_id}.{round_}"


class DialState(msgspec.Struct, kw_only=True):
    state: str  # claimed | dialed | failed
    at: float  # when the attempt was first claimed: Twilio calls created before it are not ours
    call_id: str
    sid: str | None = None
    # True while a create may have reached Twilio without us learning its SID (a request in flight, a
    # timeout, a 5xx): the next try must look the call up before creating another. A record written by a
    # version without this field was, by construction, mid-dial.
    unsure: bool = True
    tries: int = 0  # creates (and look-ups) that failed transiently
    first_error_at: float | None = None
    last_error: str | None = None


def dial_key(job_id: str, provider_id: str, attempt: int) -> str:
    return f"dial.{job_id}.{provider_id}.{attempt}"


def mask(phone: str) -> str:
    return phone[:-4].rstrip() + "****" if len(phone) > 6 else "****"


class Dispatcher:
    def __init__(
        self,
        js: JetStreamContext,
        publisher: Publisher,
        dialer: TwilioDialer,
        settings: DispatcherSettings,
        *,
        dials_kv: KeyValue,
        calls_kv: KeyValue,
        limits: SharedLimits,
    ) -> None:
        self.js = js
        self.publisher = publisher
        self.dialer = dialer
        self.settings = settings
        self.dials = dials_kv
        self.calls = calls_kv
        self.limits = limits
        self.stopping = asyncio.Event()

    @classmethod
    async def create(
        cls, js: JetStreamContext, publisher: Publisher, dialer: TwilioDialer, settings: DispatcherSettings
    ) -> Dispatcher:
        dials_kv = await js.key_value(subjects.KV_DIALS)
        calls_kv = await js.key_value(subjects.KV_CALLS)
        limits_kv = await js.key_value(subjects.KV_LIMITS)
        limits = SharedLimits(
            limits_kv,
            max_concurrent=settings.max_concurrent_calls,
            calls_per_second=settings.calls_per_second,
            slot_ttl_s=settings.call_time_limit_s + settings.ring_timeout_s + 120,
        )
        return cls(js, publisher, dialer, settings, dials_kv=dials_kv, calls_kv=calls_kv, limits=limits)

    # ---- KV helpers -------------------------------------------------------------------------------------------
    async def _get(self, key: str) -> tuple[bytes | None, int | None]:
        return await kv_read(self.dials, key)

    async def _create(self, key: str, value: bytes) -> bool:
        try:
            await self.dials.create(key, value)
            return True
        except KeyWrongLastSequenceError:
            return False

    async def _job_entry(self, job_id: str) -> tuple[ev.JobStarted | None, int | None]:
        raw, revision = await self._get(f"job.{job_id}")
        if raw is None:
            return None, None
        job = codec.decode(raw)
        assert isinstance(job, ev.JobStarted)
        return job, revision

    async def job(self, job_id: str) -> ev.JobStarted | None:
        """The job as KV holds it now (read every time: another replica may have merged a re-start)."""
        return (await self._job_entry(job_id))[0]

    async def cancelled(self, job_id: str) -> bool:
        raw, _ = await self._get(f"cancel.{job_id}")
        return raw is not None

    def max_attempts(self, job: ev.JobStarted) -> int:
        return job.max_attempts or self.settings.max_call_attempts

    # ---- jobs -------------------------------------------------------------------------------------------------
    async def on_job(self, event: ev.Event, delivery: Delivery) -> None:
        if isinstance(event, ev.JobCancelled):
            await self.dials.put(f"cancel.{event.job_id}", b"1")
            log.info("job %s cancelled: queued dials will be dropped", event.job_id)
            return
        if not isinstance(event, ev.JobStarted):
            return
        merged = await self._merge_job(event)
        if self.settings.market.strategy == "market":
            await self.plan(event.job_id)
            return
        for spec in event.providers:
            await self.schedule(merged, spec.id, attempt=1, not_before=None, reason="initial")

    async def plan(self, job_id: str) -> int:
        """Market strategy: place the calls `decisions.plan_calls` plans on the folded job log now."""
        job = await self.job(job_id)
        if job is None or await self.cancelled(job_id):
            return 0
        history = await bus.job_history(self.js, job_id)
        market, _ = decisions.fold_market(history)
        placed = 0
        for item in decisions.plan_calls(history, self.settings.market, attempts_per_round=self.max_attempts(job)):
            mine = market.get(item.planned.provider_id, decisions.ProviderMarket())
            record = PlanRecord(planned=item.planned, dial=item.dial, their_prices=mine.their_prices,
                                our_offers=mine.our_offers, cited=mine.cited)
            if await self._place(record):
                placed += 1
                log.info("job %s: round %d call to %s (%s, carrying %s)", job_id, item.planned.round,
                         item.planned.provider_id, item.planned.reason, item.planned.shown)
        return placed

    async def _place(self, record: PlanRecord) -> bool:
        """Publish a planned call and its dial once per (job, provider, round), however often it is planned."""
        planned = record.planned
        key = plan_key(planned.job_id, planned.provider_id, planned.round)
        if not await self._create(key, msgspec.json.encode(record)):
            raw, _ = await self._get(key)
            if raw is None:
                return False
            record = msgspec.json.decode(raw, type=PlanRecord)
            if record.published:
                return False  # placed already (another replica, or a repeated outcome)
        await self.publisher.publish(record.planned)
        await self._schedule_dial(record.dial)
        await self.dials.put(key, msgspec.json.encode(msgspec.structs.replace(record, published=True)))
        return True

    async def plan_record(self, job_id: str, provider_id: str, round_: int) -> PlanRecord | None:
        raw, _ = await self._get(plan_key(job_id, provider_id, round_))
        return msgspec.json.decode(raw, type=PlanRecord) if raw is not None else None

    async def _merge_job(self, event: ev.JobStarted) -> ev.JobStarted:
        """Store the job, merged with what KV holds, by compare-and-set: concurrent re-starts on two replicas
        both land (the loser re-reads and merges again)."""
        key = f"job.{event.job_id}"
        while True:
            known, revision = await self._job_entry(event.job_id)
            merged = event
            if known is not None:  # a re-start may add providers; keep everyone and everything already known
                new_ids = {p.id for p in event.providers}
                merged = msgspec.structs.replace(
                    event,
                    providers=[*event.providers, *(p for p in known.providers if p.id not in new_ids)],
                    max_attempts=event.max_attempts if event.max_attempts is not None else known.max_attempts,
                )
            try:
                if revision is None:
                    await self.dials.create(key, codec.encode(merged))
                else:
                    await self.dials.update(key, codec.encode(merged), last=revision)
                return merged
            except KeyWrongLastSequenceError:
                continue  # another replica wrote in between: merge with its version

    async def schedule(
        self, job: ev.JobStarted, provider_id: str, *, attempt: int, not_before: datetime | None, reason: str
    ) -> bool:
        """Publish DialScheduled once per (provider, attempt), however often this is called."""
        return await self._schedule_dial(ev.DialScheduled(
            event_id=ids.dial_event_id(job.job_id, provider_id, attempt),
            job_id=job.job_id,
            provider_id=provider_id,
            attempt=attempt,
            not_before=not_before,
            reason=reason,
            max_attempts=self.max_attempts(job),
        ))

    async def _schedule_dial(self, dial: ev.DialScheduled) -> bool:
        guard = f"sched.{dial.job_id}.{dial.provider_id}.{dial.attempt}"
        if not await self._create(guard, b"pending"):
            raw, _ = await self._get(guard)
            if raw != b"pending":
                return False  # already published: a repeated JobStarted or outcome
        await self.publisher.publish(dial)
        await self.dials.put(guard, b"published")
        return True

    # ---- bookings ---------------------------------------------------------------------------------------------
    async def on_booking(self, event: ev.Event, delivery: Delivery) -> Later | None:
        """BookingRequested -> a call back to the provider (a new round) to confirm the price and an appointment."""
        if not isinstance(event, ev.BookingRequested):
            return None
        job = await self.job(event.job_id)
        if job is None:
            return Later(1.0)
        if await self.cancelled(event.job_id):
            return None
        state = st.fold_job(await bus.job_history(self.js, event.job_id)).get(event.provider_id)
        if state is None:
            return None
        if not state.terminal and state.booking_status == st.REQUESTED:
            return Later(5.0)  # its last call is still running: book once it has ended
        dial = decisions.booking_dial(state, attempts_per_round=self.max_attempts(job))
        if dial is None:
            return None
        brief = BookingBrief(price=event.price, windows=list(event.windows))
        await self.dials.put(booking_key(event.job_id, event.provider_id, dial.round), msgspec.json.encode(brief))
        if await self._schedule_dial(dial):
            log.info("job %s: booking call to %s (round %d) for $%g", event.job_id, event.provider_id, dial.round,
                     event.price)
        return None

    async def booking_brief(self, job_id: str, provider_id: str, round_: int) -> BookingBrief | None:
        raw, _ = await self._get(booking_key(job_id, provider_id, round_))
        return msgspec.json.decode(raw, type=BookingBrief) if raw is not None else None

    # ---- dials ------------------------------------------------------------------------------------------------
    async def on_dial(self, event: ev.Event, delivery: Delivery) -> Later | None:
        if not isinstance(event, ev.DialScheduled):
            return None
        job = await self.job(event.job_id)
        if job is None:
            return Later(1.0)  # the job record is written before any dial is scheduled; wait for it
        spec = next((p for p in job.providers if p.id == event.provider_id), None)
        if spec is None:
            log.error("DialScheduled for unknown provider %s of job %s", event.provider_id, event.job_id)
            return None
        if await self.cancelled(event.job_id):
            return None
        key = dial_key(event.job_id, event.provider_id, event.attempt)
        raw, _ = await self._get(key)
        existing = msgspec.json.decode(raw, type=DialState) if raw else None
        if existing is not None and existing.state == "dialed" and existing.sid:
            await self._publish_dialed(event, existing.sid, spec.phone_number)
            return None
        if existing is not None and existing.state == "failed":
            return None
        now = datetime.now(UTC)
        if event.not_before and event.not_before > now:
            return Later(min((event.not_before - now).total_seconds(), 300.0))
        window_opens = policy.next_window_start(
            now, self.settings.calling_hours, policy.provider_timezone(spec.phone_number, spec.timezone)
        )
        if window_opens is not None:
            log.info("provider %s outside calling hours; waiting until %s", event.provider_id, window_opens)
            return Later(min((window_opens - now).total_seconds() + 1, 3600.0))

        heartbeat = asyncio.create_task(self._keep_alive(delivery))
        try:
            await self.limits.acquire_slot(key, stop=self.stopping)
            if await self.cancelled(event.job_id):
                await self.limits.release_slot(key)
                return None
            if existing is not None and existing.state == "claimed" and existing.unsure:
                # An earlier create of this attempt may have reached Twilio (timeout, 5xx, or a dispatcher that
                # died mid-request): adopt that call rather than ring the provider again.
                try:
                    adopted = await self._find_created(event, spec, existing)
                except Exception as exc:  # cannot tell: never dial blind; wait and ask again
                    lookup = DialError(f"cannot check Twilio for an earlier call: {exc}", None, None, ambiguous=True)
                    return await self._transient(event, spec, key, existing, lookup)
                if adopted:
                    await self._adopt(event, spec, key, existing, adopted)
                    return None
            await self.limits.take_turn()
            return await self._dial(event, job, spec, key, existing)
        finally:
            heartbeat.cancel()

    async def _keep_alive(self, delivery: Delivery) -> None:
        """Tell JetStream we are still working so a long wait for a slot is not redelivered elsewhere."""
        while True:
            await asyncio.sleep(3)  # well inside the consumer's 10 s ack_wait
            with contextlib.suppress(Exception):
                await delivery.msg.in_progress()

    async def _mark(self, key: str, state: DialState) -> None:
        await self.dials.put(key, msgspec.json.encode(state))

    async def _find_created(self, event: ev.DialScheduled, spec: ev.ProviderSpec, claimed: DialState) -> str | None:
        """The SID of a call Twilio created for this attempt on an earlier try, if any.

        Twilio's Call resource does not echo our webhook URLs (where the call_id marker travels), so the call is
        found by its numbers and creation time; calls already recorded for this provider's earlier attempts
        are excluded. (Twilio stamps creation to the second, hence the small margin.)
        """
        found = await self.dialer.find_calls(
            spec.phone_number, self.settings.twilio_phone_number, datetime.fromtimestamp(claimed.at - 2, UTC)
        )
        known: set[str] = set()
        for earlier in range(1, event.attempt):
            raw, _ = await self._get(dial_key(event.job_id, event.provider_id, earlier))
            if raw is not None and (sid := msgspec.json.decode(raw, type=DialState).sid):
                known.add(sid)
        mine = [sid for sid, _ in found if sid not in known]
        return mine[-1] if mine else None  # oldest first created: the one our first lost answer was for

    async def _adopt(
        self, event: ev.DialScheduled, spec: ev.ProviderSpec, key: str, state: DialState, sid: str
    ) -> None:
        adopted = msgspec.structs.replace(state, state="dialed", sid=sid, unsure=False)
        await self._mark(key, adopted)
        ctx = await self.call_context(state.call_id)
        if ctx is not None and ctx.call_sid is None:
            ctx.call_sid = sid
            await self.calls.put(ctx_key(state.call_id), encode_context(ctx))
        log.info("dial %s: adopted call %s that Twilio created on an earlier try", key, sid)
        await self._publish_dialed(event, sid, spec.phone_number)
        # Its status callbacks may have gone to a dead process's gateway, or ended before we knew it: ask Twilio.
        await self._reconcile_one(key, adopted)

    async def _dial(
        self, event: ev.DialScheduled, job: ev.JobStarted, spec: ev.ProviderSpec, key: str, prior: DialState | None
    ) -> Later | None:
        # One call_id (and context) per attempt, kept across tries: it travels in webhook URLs and stream
        # parameters, so whichever create Twilio acted on finds the same context.
        if prior is not None and prior.state == "claimed":
            state = msgspec.structs.replace(prior, unsure=True)
        else:
            state = DialState(state="claimed", at=time.time(), call_id=ev.new_id("call"))
        call_id = state.call_id
        await self._mark(key, state)  # claimed and unsure before the request: a crash from here is looked up
        ctx = await self.call_context(call_id)
        if ctx is None:
            plan = await self.plan_record(event.job_id, event.provider_id, event.round)
            competitor: Quote | None = plan.planned.competitor if plan is not None else None
            ctx = CallContext(
                call_id=call_id,
                job_id=event.job_id,
                provider_id=event.provider_id,
                attempt=event.attempt,
                service_provider=spec.service_provider,
                phone_number=spec.phone_number,
                **st.provider_terms(job, spec),
                token=secrets.token_urlsafe(32),
                round=event.round,
                competitor=competitor,
                their_prices=plan.their_prices if plan is not None else [],
                our_offers=plan.our_offers if plan is not None else [],
                cited=plan.cited if plan is not None else [],
                booking=await self.booking_brief(event.job_id, event.provider_id, event.round),
            )
            await self.calls.put(ctx_key(call_id), encode_context(ctx))
        request = DialRequest(
            call_id=call_id,
            to=spec.phone_number,
            from_=self.settings.twilio_phone_number,
            public_base_url=self.settings.public_base_url,
            ring_timeout_s=self.settings.ring_timeout_s,
            time_limit_s=self.settings.call_time_limit_s,
        )
        try:
            sid = await self.dialer.dial(request)
        except DialError as exc:
            DIALS.labels("error").inc()
            if policy.is_permanent(exc.code, exc.http_status):
                return await self._fail(event, spec, key, state, exc.reason, exc.code, permanent=True)
            return await self._transient(event, spec, key, state, exc)
        DIALS.labels("placed").inc()
        await self._mark(key, msgspec.structs.replace(state, state="dialed", sid=sid, unsure=False))
        ctx.call_sid = sid
        await self.calls.put(ctx_key(call_id), encode_context(ctx))
        await self._publish_dialed(event, sid, spec.phone_number)
        return None

    async def _transient(
        self, event: ev.DialScheduled, spec: ev.ProviderSpec, key: str, state: DialState, exc: DialError
    ) -> Later | None:
        """Twilio is rate limiting, failing or slow: try this attempt again later, within the retry window.

        The dial record stays (claimed, with whether a call may exist), so the next try looks before it dials.
        """
        now = time.time()
        first = state.first_error_at or now
        if now - first >= self.settings.dial_retry_window_s:
            if exc.ambiguous:  # a last look: failing the attempt must not hide a call that is ringing
                with contextlib.suppress(Exception):
                    if sid := await self._find_created(event, spec, state):
                        await self._adopt(event, spec, key, state, sid)  # it keeps the slot it holds
                        return None
            reason = f"Twilio unavailable for {now - first:.0f}s: {exc.reason}"
            return await self._fail(event, spec, key, state, reason, exc.code, permanent=False)
        await self.limits.release_slot(key)
        tries = state.tries + 1
        await self._mark(key, msgspec.structs.replace(
            state, unsure=exc.ambiguous, tries=tries, first_error_at=first, last_error=exc.reason))
        delay = policy.transient_delay(tries, exc.retry_after_s)
        log.warning("dial %s to %s: transient Twilio error (HTTP %s, code %s, %s); try %d again in %.1fs",
                    state.call_id, mask(spec.phone_number), exc.http_status, exc.code, exc.reason, tries + 1, delay)
        return Later(delay)

    async def _fail(
        self, event: ev.DialScheduled, spec: ev.ProviderSpec, key: str, state: DialState, reason: str,
        code: int | None, *, permanent: bool,
    ) -> None:
        await self._mark(key, msgspec.structs.replace(state, state="failed", unsure=False))
        await self.limits.release_slot(key)
        log.warning("dial %s to %s failed: %s (code %s)", state.call_id, mask(spec.phone_number), reason, code)
        await self.publisher.publish(ev.DialFailed(
            event_id=ids.dial_failed_event_id(event.job_id, event.provider_id, event.attempt),
            job_id=event.job_id,
            provider_id=event.provider_id,
            attempt=event.attempt,
            reason=reason,
            code=code,
            permanent=permanent,
        ))
        return None

    async def _publish_dialed(self, event: ev.DialScheduled, sid: str, to: str) -> None:
        await self.publisher.publish(ev.CallDialed(
            event_id=ids.dialed_event_id(event.job_id, event.provider_id, event.attempt),
            job_id=event.job_id,
            provider_id=event.provider_id,
            attempt=event.attempt,
            call_sid=sid,
            to=to,
            round=event.round,
        ))

    # ---- outcomes ---------------------------------------------------------------------------------------------
    async def on_outcome(self, event: ev.Event, delivery: Delivery) -> None:
        match event:
            case ev.CallStatusChanged(status=status) if status in ev.TERMINAL_TWILIO_STATUSES:
                await self.limits.release_slot(dial_key(event.job_id, event.provider_id, event.attempt))
                outcome = ev.UNANSWERED_OUTCOMES.get(status)
                if outcome in ev.RETRYABLE_OUTCOMES:
                    await self.maybe_retry(event.job_id, event.provider_id, event.attempt)
            case ev.DialFailed():
                await self.limits.release_slot(dial_key(event.job_id, event.provider_id, event.attempt))
            case ev.PriceExtracted(outcome=outcome) if outcome in ev.RETRYABLE_OUTCOMES:
                await self.maybe_retry(event.job_id, event.provider_id, event.attempt)
            case ev.PriceExtracted():
                pass
            case _:
                return
        if self.settings.market.strategy == "market":
            await self.plan(event.job_id)  # a settled call may free a slot, bring a quote, or end a round

    async def maybe_retry(self, job_id: str, provider_id: str, attempt: int) -> bool:
        """Schedule the retry the folded state says is due after `attempt` (`decisions.next_dial`), once."""
        state = st.fold_job(await bus.job_history(self.js, job_id)).get(provider_id)
        if state is None:
            return False
        dial = decisions.next_dial(state, retry_delay_s=self.settings.retry_delay_s, now=datetime.now(UTC))
        if dial is None or dial.attempt != attempt + 1:
            return False  # no retry left, or this outcome is not of the provider's latest attempt
        scheduled = await self._schedule_dial(dial)
        if scheduled:
            log.info("provider %s: %s on attempt %s; retry at %s", provider_id, state.outcome, attempt,
                     dial.not_before)
        return scheduled

    # ---- reconciliation ---------------------------------------------------------------------------------------
    async def reconcile(self, older_than_s: float = 0.0) -> int:
        """Ask Twilio about calls still holding a slot; publish the terminal status of those that ended.

        Covers calls that were live while no gateway or dispatcher was there to hear their status callback.
        The event id matches the gateway's, so a status both saw is stored once.
        """
        fixed = 0
        now = time.time()
        for key, taken_at in (await self.limits.live_slots()).items():
            if now - taken_at < older_than_s:
                continue
            raw, _ = await self._get(key)
            if raw is None:
                continue
            if await self._reconcile_one(key, msgspec.json.decode(raw, type=DialState)):
                fixed += 1
        return fixed

    async def _reconcile_one(self, key: str, state: DialState) -> bool:
        if state.state != "dialed" or not state.sid:
            return False
        try:
            status, duration = await self.dialer.fetch_status(state.sid)
        except Exception as exc:
            log.warning("reconcile: cannot fetch %s: %s", state.sid, exc)
            return False
        if status not in ev.TERMINAL_TWILIO_STATUSES:
            return False
        _, job_id, provider_id, attempt = key.split(".")
        await self.publisher.publish(ev.CallStatusChanged(
            event_id=ids.call_status_event_id(state.sid, status),
            job_id=job_id,
            provider_id=provider_id,
            attempt=int(attempt),
            call_sid=state.sid,
            status=status,
            duration_s=duration,
            source="reconcile",
        ))
        return True

    async def call_context(self, call_id: str) -> CallContext | None:
        try:
            entry = await self.calls.get(ctx_key(call_id))
        except KeyNotFoundError:
            return None
        return decode_context(entry.value)
