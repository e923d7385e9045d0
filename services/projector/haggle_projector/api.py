"""The operator API: start jobs (by publishing JobStarted) and read results (from the projection).

It is a thin layer: writes become events on the log, reads come from the store the projector fills.
The job document returned by `GET /jobs/{job_id}` is an interface other programs read; its field names
are fixed (see README).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from haggle_contracts import events as ev
from haggle_contracts import ids, subjects, text
from haggle_contracts import state as st
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from haggle import bus

from .booking import RESPONSES as BOOK_RESPONSES
from .booking import BookIn, booking_doc, booking_request
from .job_cost import call_costs, job_cost
from .projector import PROJECTION_ERROR, Projector
from .results_csv import results_csv
from .stores import ProviderStore

log = logging.getLogger(__name__)
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
JOB_ID = re.compile(ev.ID_PATTERN)


# The text rule as JSON Schema patterns, so the document says what the validators do (a client generator or
# schemathesis can tell valid from invalid). The validators stay the rule's own code, for its clear messages.
_ALLOWED = "[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]"
_VISIBLE = "[^\\s\\x00-\\x1f\\x7f-\\x9f]"
TEXT_PATTERN = f"^{_ALLOWED}*$"
REQUIRED_TEXT_PATTERN = f"^{_ALLOWED}*{_VISIBLE}{_ALLOWED}*$"  # something besides whitespace
PHONE_SEPARATORS = "[ ().-]"
PHONE_PATTERN = (f"^{PHONE_SEPARATORS}*\\+{PHONE_SEPARATORS}*[1-9]"
                 f"(?:{PHONE_SEPARATORS}*[0-9]){{6,14}}{PHONE_SEPARATORS}*$")


def Text(field: str, *, required: bool = False) -> Any:
    """A free-text field under the shared text rule (`haggle_contracts.text`): the same caps the consumers apply."""
    return Annotated[
        str,
        StringConstraints(strip_whitespace=required, min_length=1 if required else 0, max_length=text.cap(field)),
        AfterValidator(lambda v: text.check(v, field)),
        WithJsonSchema({"type": "string", "minLength": 1 if required else 0, "maxLength": text.cap(field),
                        "pattern": REQUIRED_TEXT_PATTERN if required else TEXT_PATTERN}),
    ]


def _valid_id(v: str) -> str:
    if not JOB_ID.match(v):
        raise ValueError("must be 1-64 letters, digits, '-' or '_'")
    return v


Id = Annotated[str, AfterValidator(_valid_id), WithJsonSchema({"type": "string", "pattern": ev.ID_PATTERN})]


class ProviderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service_provider: Text("service_provider", required=True)
    phone_number: Annotated[str, StringConstraints(max_length=40),
                            WithJsonSchema({"type": "string", "maxLength": 40, "pattern": PHONE_PATTERN})]
    id: Id | None = None
    zip_code: Text("zip_code") | None = None
    problem: Text("problem") | None = None
    max_price: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    context_answers: Text("context_answers") | None = None
    timezone: Text("timezone") | None = None

    @field_validator("phone_number")
    @classmethod
    def _e164(cls, v: str) -> str:
        v = re.sub(PHONE_SEPARATORS, "", v)
        if not E164.match(v):
            raise ValueError("must be an E.164 phone number such as +14155550123")
        return v


PhoneText = Annotated[str, StringConstraints(max_length=40),
                      WithJsonSchema({"type": "string", "maxLength": 40, "pattern": PHONE_PATTERN})]


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    problem: Text("problem", required=True)
    zip_code: Text("zip_code", required=True)
    max_price: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    providers: Annotated[list[ProviderIn], Field(min_length=1, max_length=1000)]
    job_id: Id | None = None
    context_answers: Text("context_answers") = ""
    max_attempts: Annotated[int, Field(ge=1, le=10)] | None = None
    # Where the agent may hand a call to the homeowner (transfer_to_homeowner); E.164, separators allowed.
    homeowner_phone: PhoneText | None = None

    @field_validator("homeowner_phone")
    @classmethod
    def _homeowner_e164(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = re.sub(PHONE_SEPARATORS, "", v)
        if not E164.match(v):
            raise ValueError("must be an E.164 phone number such as +14155550123")
        return v


Publish = Callable[..., Awaitable[int]]


@dataclass
class ApiDeps:
    store: ProviderStore
    publish: Publish
    api_key: str | None = None
    js: JetStreamContext | None = None  # the log: duplicate ids, and what /start-job re-publishes
    projector: Projector | None = None  # the projection in this process, for health and the POST wait
    projection_wait_s: float = 0.0  # how long POST /jobs waits for the projection before 202 (0: answer 201 at once)
    # Publishes a JobStarted only as the first message on its subject (`Publisher.publish(first_on_subject=True)`):
    # the log refuses a taken job id. None (a harness without a stream): a plain publish.
    publish_first: Publish | None = None


SESSION_COOKIE = "haggle_session"
SESSION_MAX_AGE_S = 30 * 24 * 3600


def session_token(api_key: str, *, now: float | None = None) -> str:
    """A dashboard session: its expiry, signed with the API key (HMAC-SHA256). The key itself never leaves the
    server in a cookie, and changing the key ends every session."""
    expires = int((time.time() if now is None else now) + SESSION_MAX_AGE_S)
    return f"{expires}.{_sign(api_key, expires)}"


def session_valid(api_key: str, token: str) -> bool:
    expires, _, signature = token.partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return False
    return hmac.compare_digest(signature.encode(), _sign(api_key, int(expires)).encode())


def _sign(api_key: str, expires: int) -> str:
    return hmac.new(api_key.encode(), f"haggle-session:{expires}".encode(), hashlib.sha256).hexdigest()


def require_api_key(deps: ApiDeps) -> Callable[[Request], Awaitable[None]]:
    async def check(request: Request) -> None:
        if not deps.api_key:
            return
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        supplied = supplied or request.headers.get("x-api-key", "")
        if supplied and hmac.compare_digest(supplied.encode(), deps.api_key.encode()):
            return
        if session_valid(deps.api_key, request.cookies.get(SESSION_COOKIE, "")):
            return
        raise HTTPException(status_code=401, detail="missing or wrong API key",
                            headers={"WWW-Authenticate": "Bearer"})

    return check


async def require_json(request: Request) -> None:
    """Only `application/json` bodies: a browser can send text/plain cross-origin without a preflight (CSRF)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(status_code=415, detail="the body must be application/json")


def job_started_from(body: JobIn, *, source: str = "api") -> ev.JobStarted:
    job_id = body.job_id or ev.new_id("job")
    providers = []
    seen: set[str] = set()
    for p in body.providers:
        pid = p.id or ev.new_id("p")
        if pid in seen:
            raise HTTPException(status_code=409, detail=f"provider id {pid!r} appears twice")
        seen.add(pid)
        providers.append(ev.ProviderSpec(
            id=pid, service_provider=p.service_provider, phone_number=p.phone_number,
            zip_code=p.zip_code, problem=p.problem, max_price=p.max_price,
            context_answers=p.context_answers, timezone=p.timezone,
        ))
    return ev.JobStarted(
        event_id=ids.fresh_event_id(),
        job_id=job_id,
        problem=body.problem,
        zip_code=body.zip_code,
        max_price=body.max_price,
        context_answers=body.context_answers,
        providers=providers,
        max_attempts=body.max_attempts,
        source=source,
        homeowner_phone=body.homeowner_phone,
    )


def job_cancelled(job_id: str) -> ev.JobCancelled:
    """The operator's cancel, from the API or the dashboard. One event id per job: cancelling twice is one event."""
    return ev.JobCancelled(event_id=ids.job_cancelled_event_id(job_id), job_id=job_id)


def job_started_from_rows(job_id: str, rows: list[st.ProviderState]) -> ev.JobStarted:
    """Seed compatibility: a job whose provider rows were written straight into the table."""
    first = rows[0]
    return ev.JobStarted(
        event_id=ids.fresh_event_id(),
        job_id=job_id,
        problem=first.problem,
        zip_code=first.zip_code,
        max_price=first.max_price,
        context_answers=first.context_answers or "",
        providers=[
            ev.ProviderSpec(
                id=r.id, service_provider=r.service_provider, phone_number=r.phone_number, zip_code=r.zip_code,
                problem=r.problem, max_price=r.max_price, context_answers=r.context_answers, timezone=r.timezone,
            )
            for r in rows
        ],
        max_attempts=first.max_attempts,
        source="start-job",
    )


def provider_doc(s: st.ProviderState) -> dict[str, Any]:
    return {
        "id": s.id,
        "job_id": s.job_id,
        "service_provider": s.service_provider,
        "phone_number": s.phone_number,
        "zip_code": s.zip_code,
        "problem": s.problem,
        "max_price": s.max_price,
        "context_answers": s.context_answers,
        "call_status": s.call_status,
        "outcome": s.outcome,
        "negotiated_price": s.negotiated_price,
        "initial_quote": s.initial_quote,
        "price_type": s.price_type,
        "conditions": s.conditions,
        "evidence": s.evidence,
        "extraction_method": s.extraction_method,
        "disagreement": s.disagreement,
        "attempts": s.attempts,
        "max_attempts": s.max_attempts,
        "round": s.round,
        "booking_status": s.booking_status,
        "appointment": s.appointment,
        "visit_fee": s.visit_fee,
        "includes_parts": s.includes_parts,
        "warranty": s.warranty,
        "earliest_availability": s.earliest_availability,
        "all_in": st.all_in(s),
        "answered_by": s.answered_by,
        "end_reason": s.end_reason,
        "voicemail_left": s.voicemail_left,
        "failure_reason": s.failure_reason,
        "retry_at": s.retry_at.isoformat() if s.retry_at else None,
        "duration_s": s.duration_s,
        "call_sid": s.call_sid,
        "call_transcript": s.call_transcript,
        "transcript": [{"role": u.role, "text": u.text} for u in s.transcript],
        "cost": s.cost,
        "costs": call_costs(s),
        "recordings": [{"attempt": r.attempt, "call_sid": r.call_sid, "recording_sid": r.recording_sid,
                        "status": r.status, "url": r.url, "duration_s": r.duration_s, "channels": r.channels}
                       for r in s.recordings],
        "created_at": s.created_at.isoformat() if s.created_at else None,
        "dialed_at": s.dialed_at.isoformat() if s.dialed_at else None,
        "ended_at": s.ended_at.isoformat() if s.ended_at else None,
        "updated_at": s.updated_at.isoformat() if s.updated_at else None,
    }


def job_doc(job_id: str, rows: list[st.ProviderState]) -> dict[str, Any]:
    offers = st.rank_offers(rows)
    best = next((o for o in offers if o.outcome == ev.Outcome.AGREED and o.price is not None), None)
    return {
        "job_id": job_id,
        "problem": rows[0].problem if rows else None,
        "zip_code": rows[0].zip_code if rows else None,
        "max_price": rows[0].max_price if rows else None,
        # A row the store refused no longer follows the log: say so rather than look "running" forever.
        "status": "projection_error" if any(r.call_status == PROJECTION_ERROR for r in rows)
        else "completed" if rows and all(r.terminal for r in rows) else "running",
        "providers": [provider_doc(r) for r in rows],
        "offers": [
            {"provider_id": o.provider_id, "service_provider": o.service_provider, "outcome": o.outcome,
             "price": o.price, "initial_quote": o.initial_quote, "saving": o.saving, "visit_fee": o.visit_fee,
             "all_in": o.all_in}
            for o in offers
        ],
        "best_offer": (
            {"provider_id": best.provider_id, "service_provider": best.service_provider, "price": best.price,
             "initial_quote": best.initial_quote, "saving": best.saving, "visit_fee": best.visit_fee,
             "all_in": best.all_in}
            if best else None
        ),
        **booking_doc(rows),
        "cost": job_cost(rows),
    }


async def parse_job(request: Request) -> JobIn:
    """The body, validated here rather than by FastAPI: its 422 handler echoes the offending input, and fails
    (500) when that input is not JSON-renderable (`Infinity`, invalid UTF-8). Errors keep loc/msg/type only."""
    try:
        return JobIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=[
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)]) from None


_STATUS_TEXT = {
    202: "Accepted: the job is on the log but not yet in the projection; poll the `Location`",
    401: "Missing or wrong API key",
    404: "No such job",
    409: "The job id or a provider id is already taken",
    413: "The body is larger than MAX_BODY_BYTES",
    415: "The body is not application/json",
    422: "The body or a parameter is invalid (`detail` lists loc/msg/type)",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"description": _STATUS_TEXT[code]} for code in codes}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined: a `#/$defs/...` reference would not resolve from the
    root of the OpenAPI document the schema is embedded in."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]


async def create_job_on_log(deps: ApiDeps, event: ev.JobStarted, *, explicit_ids: list[str]) -> int:
    """Publish a new job, refusing (409) a job id or provider id the log already holds. Returns its sequence.

    The job id is checked by the stream itself (the JobStarted must be the first message on its subject);
    explicit provider ids are reserved in the `haggle_ids` bucket with create-only writes, so two quick POSTs
    cannot both take one. Neither check reads the projection, which may lag; the projection is still asked
    about provider ids, for jobs started by other systems straight on the log."""
    for pid in explicit_ids:
        if (await deps.store.get(pid)) is not None:
            raise HTTPException(status_code=409, detail=f"provider id {pid!r} is already used by another job")
    reserved: list[str] = []
    try:
        if deps.js is not None and explicit_ids:
            kv = await deps.js.key_value(subjects.KV_IDS)
            for pid in explicit_ids:
                try:
                    await kv.create(f"provider.{pid}", event.job_id.encode())
                except KeyWrongLastSequenceError:
                    raise HTTPException(status_code=409,
                                        detail=f"provider id {pid!r} is already used by another job") from None
                reserved.append(pid)
        try:
            return await (deps.publish_first or deps.publish)(event)
        except bus.SubjectNotNew:
            raise HTTPException(status_code=409,
                                detail=f"job {event.job_id!r} already exists; use /start-job") from None
    except BaseException:
        if deps.js is not None and reserved:  # give back what this refused job took
            kv = await deps.js.key_value(subjects.KV_IDS)
            for pid in reserved:
                with contextlib.suppress(Exception):
                    await kv.delete(f"provider.{pid}")
        raise


async def projected(deps: ApiDeps, event: ev.JobStarted, seq: int) -> bool:
    """Wait (bounded by `projection_wait_s`) until the projection holds every provider row of the job."""
    if deps.projection_wait_s <= 0:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deps.projection_wait_s
    wanted = {p.id for p in event.providers}
    while True:
        rows = await deps.store.list_job(event.job_id)
        if wanted <= {r.id for r in rows if r.last_seq >= seq}:
            return True
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        if deps.projector is not None and deps.projector.applied_seq < seq:
            await deps.projector.wait_applied(seq, min(remaining, 0.5))
        else:  # another replica projects this event: only the store can tell
            await asyncio.sleep(min(remaining, 0.05))


async def _job_history(deps: ApiDeps, job_id: str) -> list[ev.Event]:
    if deps.js is None:
        return []
    try:
        return await bus.job_history(deps.js, job_id)
    except Exception as exc:  # the log is unreachable: the rows still describe the job
        log.warning("start-job %s: the event log is unavailable (%s); re-starting from the projection", job_id, exc)
        return []


def restart_event(job_id: str, rows: list[st.ProviderState], history: list[ev.Event]) -> ev.JobStarted:
    """A JobStarted that re-starts the job with every field it was started with.

    From the log when it has the job (every provider's full spec, the job's fields, `max_attempts`); from
    the rows otherwise (a seed-era job written straight into the table)."""
    starts = [e for e in history if isinstance(e, ev.JobStarted)]
    if not starts:
        return job_started_from_rows(job_id, rows)
    specs: dict[str, ev.ProviderSpec] = {}
    for start in starts:
        for spec in start.providers:
            specs[spec.id] = spec
    last = starts[-1]
    max_attempts = next((s.max_attempts for s in reversed(starts) if s.max_attempts), None)
    return msgspec.structs.replace(last, event_id=ids.fresh_event_id(), occurred_at=ev.utcnow(),
                                   providers=list(specs.values()), max_attempts=max_attempts, source="start-job")


async def request_booking(deps: ApiDeps, job_id: str, rows: list[st.ProviderState], body: BookIn
                          ) -> ev.BookingRequested:
    """Publish the job's BookingRequested (shared by the API and the dashboard's Book button)."""
    if deps.js is None:
        raise HTTPException(status_code=503, detail="the event log is unavailable")
    try:
        history = await bus.job_history(deps.js, job_id)
    except Exception as exc:
        raise HTTPException(status_code=503, detail=f"the event log is unavailable: {exc}") from None
    if history:
        rows = list(st.fold_job(history).values())  # the projection may trail the log by a moment
    event = booking_request(job_id, rows, history, body)
    await deps.publish(event)
    return event


def build_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter()
    auth = Depends(require_api_key(deps))

    @router.get("/healthz", responses=_responses())
    async def healthz() -> dict[str, Any]:
        health: dict[str, Any] = {"status": "ok"}
        if deps.projector is not None:
            health["projection_errors"] = deps.projector.errors
            health["last_projection_error"] = deps.projector.last_error
        return health

    @router.post("/jobs", status_code=201, dependencies=[auth, Depends(require_json)],
                 responses=_responses(202, 401, 409, 413, 415, 422), openapi_extra={"requestBody": {
                     "required": True, "content": {"application/json": {"schema": inline_schema(JobIn)}}}})
    async def create_job(request: Request) -> Any:
        body = await parse_job(request)
        event = job_started_from(body)
        seq = await create_job_on_log(deps, event, explicit_ids=[p.id for p in body.providers if p.id])
        doc = {
            "job_id": event.job_id,
            "providers": [
                {"id": p.id, "service_provider": p.service_provider, "phone_number": p.phone_number}
                for p in event.providers
            ],
        }
        if await projected(deps, event, seq):
            return JSONResponse(doc, status_code=201)
        # The job is on the log; the projection is behind. Tell the client where it will appear.
        return JSONResponse(doc, status_code=202, headers={"Location": f"/jobs/{event.job_id}"})

    @router.post("/start-job/{job_id}", dependencies=[auth], responses=_responses(401, 404))
    async def start_job(job_id: str) -> dict[str, Any]:
        rows = await deps.store.list_job(job_id) if JOB_ID.match(job_id) else []
        if not rows:
            raise HTTPException(status_code=404, detail=f"job {job_id!r} not found")
        history = await _job_history(deps, job_id)
        await deps.publish(restart_event(job_id, rows, history))
        return {"status": "started", "count": len(rows)}

    @router.post("/jobs/{job_id}/cancel", dependencies=[auth], responses=_responses(401, 404))
    async def cancel_job(job_id: str) -> dict[str, Any]:
        rows = await deps.store.list_job(job_id) if JOB_ID.match(job_id) else []
        if not rows:
            raise HTTPException(status_code=404, detail=f"job {job_id!r} not found")
        await deps.publish(job_cancelled(job_id))
        return {"status": "cancelling", "job_id": job_id}

    @router.post("/jobs/{job_id}/book", status_code=202, dependencies=[auth, Depends(require_json)],
                 responses=BOOK_RESPONSES, openapi_extra={"requestBody": {
                     "required": True, "content": {"application/json": {"schema": inline_schema(BookIn)}}}})
    async def book(job_id: str, request: Request) -> dict[str, Any]:
        try:
            body = BookIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(status_code=422, detail=[
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_context=False, include_input=False)]) from None
        rows = await deps.store.list_job(job_id) if JOB_ID.match(job_id) else []
        if not rows:
            raise HTTPException(status_code=404, detail=f"job {job_id!r} not found")
        event = await request_booking(deps, job_id, rows, body)
        return {"status": st.REQUESTED, "job_id": job_id, "provider_id": event.provider_id, "price": event.price,
                "windows": event.windows}

    @router.get("/jobs/{job_id}", dependencies=[auth], responses=_responses(401, 404))
    async def get_job(job_id: str) -> dict[str, Any]:
        rows = await deps.store.list_job(job_id) if JOB_ID.match(job_id) else []
        if not rows:
            raise HTTPException(status_code=404, detail=f"job {job_id!r} not found")
        return job_doc(job_id, rows)

    @router.get("/jobs/{job_id}/results.csv", dependencies=[auth], response_class=Response,
                responses={200: {"description": "One line per provider, best offer first (RFC 4180, UTF-8)",
                                 "content": {"text/csv": {"schema": {"type": "string"}}}},
                           **_responses(401, 404)})
    async def job_results_csv(job_id: str) -> Response:
        rows = await deps.store.list_job(job_id) if JOB_ID.match(job_id) else []
        if not rows:
            raise HTTPException(status_code=404, detail=f"job {job_id!r} not found")
        return Response(results_csv(job_doc(job_id, rows)), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="haggle-{job_id}.csv"'})

    @router.get("/jobs", dependencies=[auth], responses=_responses(401, 422))
    async def list_jobs(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        jobs = await deps.store.list_jobs(limit=max(1, min(limit, 500)))
        return {"jobs": [
            {"job_id": j.job_id, "problem": j.problem, "zip_code": j.zip_code, "max_price": j.max_price,
             "providers": j.providers, "terminal": j.terminal, "agreed": j.agreed, "best_price": j.best_price,
             "created_at": j.created_at.isoformat() if j.created_at else None}
            for j in jobs
        ]}

    return router
