"""The operator API: start jobs (by publishing JobStarted) and read results (from the projection).

It is a thin layer: writes become events on the log, reads come from the store the projector fills.
The job document returned by `GET /jobs/{job_id}` is an interface other programs read; its field names
are fixed (see README).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from haggle_contracts import events as ev
from haggle_contracts import state as st
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from .stores import ProviderStore

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
JOB_ID = re.compile(ev.ID_PATTERN)


class ProviderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service_provider: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    phone_number: str
    id: str | None = None
    zip_code: str | None = None
    problem: str | None = None
    max_price: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    context_answers: str | None = None
    timezone: str | None = None

    @field_validator("phone_number")
    @classmethod
    def _e164(cls, v: str) -> str:
        v = re.sub(r"[\s().-]", "", v)
        if not E164.match(v):
            raise ValueError("must be an E.164 phone number such as +14155550123")
        return v

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        if v is not None and not JOB_ID.match(v):
            raise ValueError("must be 1-64 letters, digits, '-' or '_'")
        return v


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    problem: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    zip_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
    max_price: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    providers: Annotated[list[ProviderIn], Field(min_length=1, max_length=1000)]
    job_id: str | None = None
    context_answers: str = ""
    max_attempts: Annotated[int, Field(ge=1, le=10)] | None = None

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, v: str | None) -> str | None:
        if v is not None and not JOB_ID.match(v):
            raise ValueError("must be 1-64 letters, digits, '-' or '_'")
        return v


Publish = Callable[[ev.Event], Awaitable[int]]


@dataclass
class ApiDeps:
    store: ProviderStore
    publish: Publish
    api_key: str | None = None


def require_api_key(deps: ApiDeps) -> Callable[[Request], Awaitable[None]]:
    async def check(request: Request) -> None:
        if not deps.api_key:
            return
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        supplied = supplied or request.headers.get("x-api-key", "") or request.cookies.get("haggle_key", "")
        if not hmac.compare_digest(supplied.encode(), deps.api_key.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong API key",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


def job_started_from(body: JobIn, *, source: str = "api") -> ev.JobStarted:
    job_id = body.job_id or ev.new_id("job")
    providers = []
    seen: set[str] = set()
    for p in body.providers:
        pid = p.id or ev.new_id("p")
        if pid in seen:
            raise HTTPException(status_code=422, detail=f"provider id {pid!r} appears twice")
        seen.add(pid)
        providers.append(ev.ProviderSpec(
            id=pid, service_provider=p.service_provider, phone_number=p.phone_number,
            zip_code=p.zip_code, problem=p.problem, max_price=p.max_price,
            context_answers=p.context_answers, timezone=p.timezone,
        ))
    return ev.JobStarted(
        event_id=ev.new_id("evt"),
        job_id=job_id,
        problem=body.problem,
        zip_code=body.zip_code,
        max_price=body.max_price,
        context_answers=body.context_answers,
        providers=providers,
        max_attempts=body.max_attempts,
        source=source,
    )


def job_started_from_rows(job_id: str, rows: list[st.ProviderState]) -> ev.JobStarted:
    """Seed compatibility: a job whose provider rows were written straight into the table."""
    first = rows[0]
    return ev.JobStarted(
        event_id=ev.new_id("evt"),
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
        "answered_by": s.answered_by,
        "end_reason": s.end_reason,
        "failure_reason": s.failure_reason,
        "retry_at": s.retry_at.isoformat() if s.retry_at else None,
        "duration_s": s.duration_s,
        "call_sid": s.call_sid,
        "call_transcript": s.call_transcript,
        "transcript": [{"role": u.role, "text": u.text} for u in s.transcript],
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
        "status": "completed" if rows and all(r.terminal for r in rows) else "running",
        "providers": [provider_doc(r) for r in rows],
        "offers": [
            {"provider_id": o.provider_id, "service_provider": o.service_provider, "outcome": o.outcome,
             "price": o.price, "initial_quote": o.initial_quote, "saving": o.saving}
            for o in offers
        ],
        "best_offer": (
            {"provider_id": best.provider_id, "service_provider": best.service_provider, "price": best.price,
             "initial_quote": best.initial_quote, "saving": best.saving}
            if best else None
        ),
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


def build_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter()
    auth = Depends(require_api_key(deps))

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.post("/jobs", status_code=201, dependencies=[auth], openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": JobIn.model_json_schema()}}}})
    async def create_job(request: Request) -> dict[str, Any]:
        body = await parse_job(request)
        if body.job_id and await deps.store.list_job(body.job_id):
            raise HTTPException(status_code=409, detail=f"job {body.job_id!r} already exists; use /start-job")
        for p in body.providers:  # provider ids are the table's primary key: unique across jobs
            if p.id and (await deps.store.get(p.id)) is not None:
                raise HTTPException(status_code=409, detail=f"provider id {p.id!r} is already used by another job")
        event = job_started_from(body)
        await deps.publish(event)
        return {
            "job_id": event.job_id,
            "providers": [
                {"id": p.id, "service_provider": p.service_provider, "phone_number": p.phone_number}
                for p in event.providers
            ],
        }

    @router.post("/start-job/{job_id}", dependencies=[auth])
    async def start_job(job_id: str) -> dict[str, Any]:
        rows = await deps.store.list_job(job_id) if JOB_ID.match(job_id) else []
        if not rows:
            raise HTTPException(status_code=404, detail=f"job {job_id!r} not found")
        await deps.publish(job_started_from_rows(job_id, rows))
        return {"status": "started", "count": len(rows)}

    @router.post("/jobs/{job_id}/cancel", dependencies=[auth])
    async def cancel_job(job_id: str) -> dict[str, Any]:
        rows = await deps.store.list_job(job_id) if JOB_ID.match(job_id) else []
        if not rows:
            raise HTTPException(status_code=404, detail=f"job {job_id!r} not found")
        await deps.publish(ev.JobCancelled(event_id=f"cancel-{job_id}", job_id=job_id))
        return {"status": "cancelling", "job_id": job_id}

    @router.get("/jobs/{job_id}", dependencies=[auth])
    async def get_job(job_id: str) -> dict[str, Any]:
        rows = await deps.store.list_job(job_id) if JOB_ID.match(job_id) else []
        if not rows:
            raise HTTPException(status_code=404, detail=f"job {job_id!r} not found")
        return job_doc(job_id, rows)

    @router.get("/jobs", dependencies=[auth])
    async def list_jobs(limit: int = 50) -> dict[str, Any]:
        jobs = await deps.store.list_jobs(limit=max(1, min(limit, 500)))
        return {"jobs": [
            {"job_id": j.job_id, "problem": j.problem, "zip_code": j.zip_code, "max_price": j.max_price,
             "providers": j.providers, "terminal": j.terminal, "agreed": j.agreed, "best_price": j.best_price,
             "created_at": j.created_at.isoformat() if j.created_at else None}
            for j in jobs
        ]}

    return router
