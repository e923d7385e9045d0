"""The dashboard's HTTP routes: jobs list, job page, call view, start-a-job form, sign-in, live feed, static files.

The job and call pages fold the job's history from the log with the projector's own fold
(`haggle_contracts.state`): the projection trails the log and writes a job's rows one by one, so right
after a job starts it can be missing providers the live feed is already talking about. The store
answers the jobs list, and a job whose events have aged out of the stream. Writes are the API's own:
the form builds a `JobIn` and publishes `api.job_started_from(...)`.

When an API key is configured every page requires it: a browser signs in once with the key and carries a
session token signed with it (`api.session_token`, never the key itself) in an HttpOnly, SameSite=Strict
`haggle_session` cookie, which the operator API accepts as well. Forms posted from another origin are
refused by `haggle.http_guard` before they reach these routes.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nats.errors
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from haggle_contracts import events as ev
from haggle_contracts import fanout, subjects
from haggle_contracts import state as st
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from starlette.datastructures import UploadFile

from haggle import bus

from ..api import (
    JOB_ID,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    ApiDeps,
    create_job_on_log,
    job_cancelled,
    job_doc,
    job_started_from,
    provider_doc,
    request_booking,
    require_api_key,
    session_token,
)
from ..booking import BookIn
from ..stores import ProviderStore
from . import templates
from .feed import FeedHub, JobFold, job_feed, jobs_feed, utterance_view
from .forms import FormError, decode_upload, job_from_form
from .recording_media import TwilioMedia, playable, stream_recording

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
COOKIE = SESSION_COOKIE
COOKIE_MAX_AGE_S = SESSION_MAX_AGE_S
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "media-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
FORM_FIELDS = ("problem", "zip_code", "max_price", "context_answers", "providers")
LOG_ERRORS = (nats.errors.Error, TimeoutError, OSError)  # JetStream unreachable or not answering

Publish = Callable[[ev.Event], Awaitable[int]]


@dataclass
class DashboardDeps:
    store: ProviderStore
    nc: NatsClient
    js: JetStreamContext
    api_key: str | None
    publish: Publish
    heartbeat_s: float = 15.0
    hub: FeedHub = field(default_factory=FeedHub)
    twilio_media: TwilioMedia | None = None  # reads call recordings from Twilio for the call page

    async def close(self, deadline_s: float | None = None) -> None:
        """End the open live feeds (before the HTTP server stops: it waits for open responses).

        Shaped as a `ServiceHandle.on_stop` hook; ending a feed is immediate, so the deadline is not needed.
        """
        self.hub.close()


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def _key_refused() -> Response:
    return Response("missing or wrong API key\n", status_code=401, media_type="text/plain")


def _event_stream(body: AsyncIterator[str]) -> StreamingResponse:
    # Proxies must neither cache nor buffer a live feed: nginx holds it back unless told X-Accel-Buffering: no.
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _safe_next(raw: str | None) -> str:
    """Only same-site paths: `//evil` or `https://evil` would make the sign-in form an open redirect."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):  # browsers drop tabs/newlines: "/\t/evil" is "//evil"
        return "/"
    return raw


async def _job_rows(deps: DashboardDeps, job_id: str) -> list[st.ProviderState]:
    try:
        history = await bus.job_history(deps.js, job_id)
    except LOG_ERRORS as exc:
        log.warning("job page %s: the event log is unavailable (%s); showing the projection", job_id, exc)
        history = []
    if history:
        return list(st.fold_job(history).values())
    return await deps.store.list_job(job_id)


async def _job_completed(deps: DashboardDeps, job_id: str) -> bool:
    try:
        return any(isinstance(e, ev.JobCompleted) for e in await bus.job_history(deps.js, job_id))
    except LOG_ERRORS:
        return False


def build_dashboard_router(deps: DashboardDeps) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    check_key = require_api_key(ApiDeps(store=deps.store, publish=deps.publish, api_key=deps.api_key))
    protected = bool(deps.api_key)

    async def signed_in(request: Request) -> bool:
        try:
            await check_key(request)
        except HTTPException:
            return False
        return True

    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)

    async def job_rows_or_refusal(request: Request, job_id: str) -> list[st.ProviderState] | Response:
        """A job's rows for a page about it; else the page to answer: the sign-in, or "job not found"."""
        if not await signed_in(request):
            return to_login(request)
        rows = await _job_rows(deps, job_id) if JOB_ID.match(job_id) else []
        if not rows:
            return _html(templates.message_page("Job not found", f"There is no job {job_id!r}.",
                                                signed_in=protected), 404)
        return rows

    @router.get("/")
    async def jobs_list(request: Request) -> Response:
        if not await signed_in(request):
            return to_login(request)
        jobs = await deps.store.list_jobs(limit=100)
        return _html(templates.jobs_page(jobs, signed_in=protected))

    @router.get("/ui")
    async def ui_root() -> Response:
        return RedirectResponse("/", status_code=303)

    @router.get("/ui/jobs/{job_id}")
    async def job_page(request: Request, job_id: str) -> Response:
        rows = await job_rows_or_refusal(request, job_id)
        if isinstance(rows, Response):
            return rows
        completed = await _job_completed(deps, job_id)
        return _html(templates.job_page({**job_doc(job_id, rows), "job_completed": completed}, signed_in=protected))

    @router.post("/ui/jobs/{job_id}/book")
    async def book(request: Request, job_id: str) -> Response:
        """The Book button: book the best offer inside the windows typed (one per line), then back to the job."""
        rows = await job_rows_or_refusal(request, job_id)
        if isinstance(rows, Response):
            return rows
        form = await request.form()
        windows = [w.strip() for w in str(form.get("windows") or "").splitlines() if w.strip()]
        try:
            body = BookIn(windows=windows)
            await request_booking(ApiDeps(store=deps.store, publish=deps.publish, js=deps.js), job_id, rows, body)
        except (HTTPException, ValueError) as exc:
            reason = str(exc.detail) if isinstance(exc, HTTPException) else str(exc)
            doc = {**job_doc(job_id, rows), "job_completed": await _job_completed(deps, job_id)}
            return _html(templates.job_page(doc, signed_in=protected, booking_error=reason), 409)
        return RedirectResponse(f"/ui/jobs/{quote(job_id)}", status_code=303)

    @router.get("/ui/jobs/{job_id}/calls/{provider_id}")
    async def call_page(request: Request, job_id: str, provider_id: str) -> Response:
        if not await signed_in(request):
            return to_login(request)
        fold = JobFold(job_id)
        items: list[dict[str, Any]] = []
        if JOB_ID.match(job_id) and JOB_ID.match(provider_id):
            # The call view is the audit view: it is built from the stream, not the projection.
            try:
                async for stored in bus.replay(deps.js, subjects.job_filter(job_id)):
                    if stored.event is None:
                        continue
                    fold.apply(stored.event)
                    if fanout.provider_of(stored.event) in (None, provider_id):
                        items.append(fold.item(stored.event, stored.seq))
            except LOG_ERRORS as exc:
                log.warning("call page %s/%s: the event log is unavailable (%s)", job_id, provider_id, exc)
                return _html(templates.message_page("Event log unavailable", "The event log cannot be read right "
                                                    "now; try again in a moment.", signed_in=protected), 503)
        state = fold.states.get(provider_id)
        if state is None:
            return _html(templates.message_page("Call not found", f"Job {job_id!r} has no provider {provider_id!r}.",
                                                signed_in=protected), 404)
        job = {"job_id": job_id, "problem": fold.problem or state.problem}
        utterances = [utterance_view(u, fold.start_of(provider_id, u.attempt)) for u in state.transcript]
        return _html(templates.call_page(job, provider_doc(state), utterances, items, signed_in=protected))

    @router.get("/ui/jobs/{job_id}/calls/{provider_id}/recordings/{recording_sid}.wav")
    async def recording(request: Request, job_id: str, provider_id: str, recording_sid: str) -> Response:
        if not await signed_in(request):
            return _key_refused()
        rows = await _job_rows(deps, job_id) if JOB_ID.match(job_id) else []
        state = next((r for r in rows if r.id == provider_id), None)
        rec = playable(state, recording_sid) if state is not None else None
        if rec is None:
            return Response("no such recording\n", status_code=404, media_type="text/plain")
        return await stream_recording(deps.twilio_media, rec, request.headers.get("range"))

    @router.get("/ui/jobs/{job_id}/events")
    async def events(request: Request, job_id: str, provider: str | None = None) -> Response:
        if not await signed_in(request):
            return _key_refused()
        if not JOB_ID.match(job_id) or (provider is not None and not JOB_ID.match(provider)):
            return Response("no such job\n", status_code=404, media_type="text/plain")
        body = job_feed(deps.nc, deps.js, deps.hub, job_id, provider=provider, heartbeat_s=deps.heartbeat_s)
        return _event_stream(body)

    @router.get("/ui/events")
    async def jobs_events(request: Request) -> Response:
        if not await signed_in(request):
            return _key_refused()
        body = jobs_feed(deps.nc, deps.js, deps.hub, heartbeat_s=deps.heartbeat_s)
        return _event_stream(body)

    @router.post("/ui/jobs/{job_id}/cancel")
    async def cancel_job(request: Request, job_id: str) -> Response:
        rows = await job_rows_or_refusal(request, job_id)
        if isinstance(rows, Response):
            return rows
        try:
            await deps.publish(job_cancelled(job_id))
        except LOG_ERRORS as exc:
            log.warning("cancel %s: the event log is unavailable (%s)", job_id, exc)
            return _html(templates.message_page("Event log unavailable", "The job was not cancelled: the event log "
                                                "cannot be written right now; try again in a moment.",
                                                signed_in=protected), 503)
        log.info("job %s cancelled from the dashboard", job_id)
        return RedirectResponse(f"/ui/jobs/{quote(job_id)}", status_code=303)

    @router.get("/ui/new")
    async def new_job_form(request: Request) -> Response:
        if not await signed_in(request):
            return to_login(request)
        return _html(templates.new_job_page(signed_in=protected))

    @router.post("/ui/new")
    async def new_job(request: Request) -> Response:
        if not await signed_in(request):
            return to_login(request)
        form = await request.form()
        values = {name: str(form.get(name) or "") for name in FORM_FIELDS}
        try:
            upload = form.get("providers_csv")
            csv_text = None
            if isinstance(upload, UploadFile) and upload.filename:
                csv_text = decode_upload(await upload.read())
            body = job_from_form(values, csv_text)
            event = job_started_from(body, source="dashboard")
        except FormError as exc:
            return _html(templates.new_job_page(values, exc.errors, signed_in=protected), 422)
        except HTTPException as exc:
            return _html(templates.new_job_page(values, [str(exc.detail)], signed_in=protected), 422)
        try:
            first = functools.partial(deps.publish, first_on_subject=True) if deps.js is not None else None
            await create_job_on_log(ApiDeps(store=deps.store, publish=deps.publish, js=deps.js, publish_first=first),
                                    event, explicit_ids=[p.id for p in body.providers if p.id])
        except HTTPException as exc:
            return _html(templates.new_job_page(values, [str(exc.detail)], signed_in=protected), exc.status_code)
        log.info("job %s started from the dashboard with %d provider(s)", event.job_id, len(event.providers))
        return RedirectResponse(f"/ui/jobs/{quote(event.job_id)}", status_code=303)

    @router.get("/ui/login")
    async def login_form(request: Request, next: str = "/") -> Response:
        if not protected:
            return RedirectResponse(_safe_next(next), status_code=303)
        return _html(templates.login_page(next_url=_safe_next(next)))

    @router.post("/ui/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        next_url = _safe_next(str(form.get("next") or "/"))
        if not deps.api_key:
            return RedirectResponse(next_url, status_code=303)
        supplied = str(form.get("key") or "").strip()
        if not hmac.compare_digest(supplied.encode(), deps.api_key.encode()):
            log.warning("dashboard sign-in with a wrong key from %s", request.client.host if request.client else "?")
            return _html(templates.login_page(next_url=next_url, error="That is not the API key."), 401)
        response = RedirectResponse(next_url, status_code=303)
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        response.set_cookie(COOKIE, session_token(deps.api_key), max_age=COOKIE_MAX_AGE_S, path="/", httponly=True,
                            samesite="strict", secure=secure)
        return response

    @router.post("/ui/logout")
    async def logout() -> Response:
        response = RedirectResponse("/ui/login" if protected else "/", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    static_files = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_TYPES}

    @router.get("/ui/static/{name}")
    async def static(name: str) -> Response:
        if name not in static_files:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response(static_files[name], media_type=STATIC_TYPES[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    return router
