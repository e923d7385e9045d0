"""Twilio's REST Calls API and its signed webhook requests, as the official `twilio` SDK sees them.

Why: the dispatcher places calls with the SDK and the gateway trusts only signed webhooks, so this must answer
the SDK byte-compatibly (Call resource JSON, error JSON with Twilio codes, HTTP basic auth) and sign every
callback the way Twilio does (docs/twilio-rest.md, docs/twilio-media-streams.md). What happens during a call
is not decided here: a `CallControl` (the call simulator in twilio_standin.py) is told when a call is created,
hung up or redirected.

Error codes: 20003 (auth), 20404 (unknown resource), 21211 (invalid To), 21220 (an operation on a call that is
not in progress), 20429 (too many requests) and 32018 (inline TwiML over 4000 chars) are Twilio's documented
ones; 21201/21213/21205 for a missing To/From/Url follow Twilio's numbering for those checks, but the wording
is ours.

Twilio's bad days are switched on through `CallsApi.faults` (a `RestFaults`): rate limiting with
`Retry-After`, bursts of 5xx, and creates that succeed but answer too late for the client (docs/twilio-rest.md).
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import binascii
import io
import logging
import math
import re
import secrets
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from twilio.request_validator import RequestValidator

from haggle_sim.audio import SAMPLE_RATE
from haggle_sim.personas import Persona, PersonaBook
from haggle_sim.twilio_media_client import OutboundMessage, ProviderLine, StreamLog

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_INLINE_TWIML = 4000

TwimlSource = tuple[str, str, str]  # ("url", url, method) or ("twiml", document, "")


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def rfc2822(dt: datetime | None) -> str | None:
    return format_datetime(dt) if dt is not None else None


class TwilioApiError(Exception):
    """An error answered the way Twilio's API does: HTTP status plus `{code, message, more_info, status}`."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        body = {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}", "status": self.status}
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


class RateLimited(TwilioApiError):
    """429 / 20429 with `Retry-After`, which Twilio documents as never processed and safe to retry."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(429, 20429, "Too Many Requests")
        self.retry_after_s = retry_after_s

    def response(self) -> JSONResponse:
        resp = super().response()
        resp.headers["Retry-After"] = str(self.retry_after_s)
        return resp


@dataclass
class RestFaults:
    """Faults the REST API injects; each count is used up by the next matching requests, in this order."""

    rate_limited_creates: int = 0  # answered 429 / 20429 with `Retry-After: retry_after_s`; nothing created
    retry_after_s: int = 1
    failing_creates: int = 0  # answered `failing_status` (5xx) / 20500; nothing created
    failing_status: int = 503
    slow_creates: int = 0  # the call is created and starts, but the answer waits `slow_create_s`
    slow_create_s: float = 15.0
    # Hanging up a call that has already ended answers 400 / 21220 ("invalid call state"), as Twilio does;
    # off, it succeeds and changes nothing (the lenient behaviour older tests rely on).
    hangup_ended_21220: bool = False
    served: list[tuple[str, int, float]] = field(default_factory=list)  # (fault, HTTP status, loop time) served

    def serve(self, fault: str, status: int) -> None:
        self.served.append((fault, status, asyncio.get_running_loop().time()))


@dataclass
class CallPricing:
    """How the stand-in prices calls (docs/call-cost.md): per started minute of answered time, like Twilio's
    US voice billing, shown as a debit (negative decimal string). A fetch right after the call ended sees
    `price: null` (`null_reads` times), as Twilio fills the price in a while after the call."""

    per_minute: Decimal = Decimal("0.0140")
    unit: str = "USD"
    null_reads: int = 1
    never_priced: set[str] = field(default_factory=set)  # To numbers whose calls keep `price: null` for good

    def price(self, duration_s: int | None) -> Decimal:
        minutes = math.ceil((duration_s or 0) / 60)
        return (self.per_minute * minutes).quantize(Decimal("0.00001"))


@dataclass
class SimRecording:
    """A call recording the stand-in made (`<Start><Recording>` or `Record=true` on the create).

    Only the agent's side carries audio (what the gateway played to the callee); the callee's channel is
    silence: the stand-in's callee speaks in scripted lines, not a recorded track."""

    sid: str
    channels: int
    callback: str | None
    callback_method: str
    source: str  # Twilio's RecordingSource: StartCallRecordingTwiML or OutboundAPI
    started_at: float  # loop time
    duration: int | None = None
    status: str = "in-progress"
    callbacks: list[CallbackRecord] = field(default_factory=list)
    media_fetches: int = 0


@dataclass
class SimDial:
    """One `<Dial>` the call's TwiML ran: whom it rang, what the dialled party heard first (`<Number url>`'s
    whisper TwiML, its `<Say>` texts), and how it ended (DialCallStatus)."""

    number: str
    sid: str
    status: str = "ringing"  # then completed | no-answer | busy | failed
    duration: int = 0
    whisper: list[str] = field(default_factory=list)
    whisper_requests: list[CallbackRecord] = field(default_factory=list)
    action_requests: list[CallbackRecord] = field(default_factory=list)


@dataclass(frozen=True)
class CallbackRecord:
    """One signed webhook request the stand-in made, and how it was answered."""

    kind: str  # "status" | "amd" | "twiml"
    url: str  # the exact URL requested (for GET, including the params)
    method: str
    params: dict[str, str]
    signature: str
    sent_at: float  # loop time
    status_code: int | None  # None when the request itself failed
    error: str | None = None
    body: str = ""


@dataclass(eq=False)
class SimCall:
    """Everything one simulated call did; the object tests assert on."""

    sid: str
    account_sid: str
    to: str
    from_: str
    params: dict[str, list[str]]  # the create request as received
    persona: Persona | None
    created_at: float  # loop time
    date_created: datetime
    status: str = "queued"
    date_updated: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    answered_at: float | None = None  # loop time
    ended_at: float | None = None  # loop time
    duration: int | None = None
    answered_by: str | None = None
    machine_detection_ms: int | None = None
    status_callbacks: list[CallbackRecord] = field(default_factory=list)
    amd_callbacks: list[CallbackRecord] = field(default_factory=list)
    twiml_requests: list[CallbackRecord] = field(default_factory=list)
    twiml_documents: list[str] = field(default_factory=list)
    streams: list[StreamLog] = field(default_factory=list)
    updates: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # oddities: unsupported verbs, missing AMD callback
    end_reason: str | None = None
    failure_reason: str | None = None
    price: Decimal | None = None  # the charge, set when the call is final (reported as a negative string)
    price_null_reads: int = 0  # fetches still to answer `price: null` (Twilio computes the price later)
    price_fetches: int = 0  # fetches made after the call was final
    recordings: list[SimRecording] = field(default_factory=list)
    direction: str = "outbound-api"  # "inbound": a call to one of the account's numbers (TwilioStandin.inbound_call)
    said: list[str] = field(default_factory=list)  # the text of each <Say> the call's TwiML ran
    dialed: list[str] = field(default_factory=list)  # numbers a <Dial> put the call through to
    dials: list[SimDial] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set once the final callback was answered

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[0] if values else None

    @property
    def stream(self) -> StreamLog | None:
        """The latest media stream (a redirect can start another)."""
        return self.streams[-1] if self.streams else None

    @property
    def start_message(self) -> dict[str, Any] | None:
        return self.stream.start_message if self.stream else None

    @property
    def received(self) -> list[OutboundMessage]:
        return [m for s in self.streams for m in s.received]

    @property
    def provider_lines(self) -> list[ProviderLine]:
        return [line for s in self.streams for line in s.provider_lines]

    @property
    def agent_bytes_received(self) -> int:
        return sum(s.agent_bytes_received for s in self.streams)

    @property
    def played_audio(self) -> bytes:
        return b"".join(bytes(s.played_audio) for s in self.streams)

    @property
    def played_bytes(self) -> int:
        return sum(s.played_bytes for s in self.streams)

    @property
    def violations(self) -> list[str]:
        return [v for s in self.streams for v in s.violations]

    def callback_statuses(self) -> list[str]:
        return [r.params["CallStatus"] for r in self.status_callbacks]

    def set_status(self, status: str) -> None:
        self.status = status
        self.date_updated = datetime.now(UTC)


@dataclass
class AccountStats:
    """Account-wide numbers for load tests: when calls were created and how many were live at once."""

    created_at: list[float] = field(default_factory=list)  # loop time of every accepted create
    live: int = 0  # created and not yet ended
    max_live: int = 0


def _formatted(number: str) -> str:
    if number.startswith("+1") and len(number) == 12:
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number


def call_resource(c: SimCall, *, price: Decimal | None = None) -> dict[str, Any]:
    """The Call resource JSON as Twilio's API returns it (`price` once Twilio has computed it)."""
    uri = f"/{API_VERSION}/Accounts/{c.account_sid}/Calls/{c.sid}"
    subresources = {"notifications": "Notifications", "recordings": "Recordings", "payments": "Payments",
                    "events": "Events", "siprec": "Siprec", "streams": "Streams",
                    "transcriptions": "Transcriptions", "user_defined_messages": "UserDefinedMessages",
                    "user_defined_message_subscriptions": "UserDefinedMessageSubscriptions"}
    return {
        "account_sid": c.account_sid, "annotation": None, "answered_by": c.answered_by,
        "api_version": API_VERSION, "caller_name": None, "date_created": rfc2822(c.date_created),
        "date_updated": rfc2822(c.date_updated), "direction": c.direction,
        "duration": None if c.duration is None else str(c.duration), "end_time": rfc2822(c.end_time),
        "forwarded_from": None, "from": c.from_, "from_formatted": _formatted(c.from_), "group_sid": None,
        "parent_call_sid": None, "phone_number_sid": None,
        "price": None if price is None else f"-{price}", "price_unit": "USD",
        "queue_time": "0", "sid": c.sid, "start_time": rfc2822(c.start_time), "status": c.status,
        "subresource_uris": {k: f"{uri}/{v}.json" for k, v in subresources.items()},
        "to": c.to, "to_formatted": _formatted(c.to), "trunk_sid": None, "uri": f"{uri}.json",
    }


class WebhookSender:
    """Makes Twilio's signed webhook requests: X-Twilio-Signature over the exact URL and sorted params."""

    def __init__(self, auth_token: str, timeout: float) -> None:
        self.validator = RequestValidator(auth_token)
        # trust_env=False: webhooks go to loopback, never through a proxy from the environment.
        self._http = httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, kind: str, url: str, method: str, params: dict[str, str]) -> CallbackRecord:
        method = (method or "POST").upper()
        headers = {"User-Agent": "TwilioProxy/1.1", "I-Twilio-Idempotency-Token": secrets.token_hex(16)}
        content: bytes | None = None
        if method == "GET":
            # Twilio puts GET params in the query string and signs the full URL with no params.
            full = url + ("&" if "?" in url else "?") + urlencode(params)
            signature = self.validator.compute_signature(full, {})
        else:
            full, method = url, "POST"
            signature = self.validator.compute_signature(url, params)
            content = urlencode(params).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
        headers["X-Twilio-Signature"] = signature
        sent_at = asyncio.get_running_loop().time()
        try:
            resp = await self._http.request(method, full, content=content, headers=headers)
        except httpx.HTTPError as exc:
            logger.warning("%s webhook %s %s failed: %s", kind, method, full, exc)
            error = f"{type(exc).__name__}: {exc}"
            return CallbackRecord(kind, full, method, params, signature, sent_at, None, error)
        code = resp.status_code
        return CallbackRecord(kind, full, method, params, signature, sent_at, code, body=resp.text)


class CallControl(Protocol):
    """What the REST API asks of the call simulator."""

    def start_call(self, call: SimCall) -> None: ...

    async def hang_up(self, call: SimCall, status: str) -> None: ...

    def redirect(self, call: SimCall, source: TwimlSource) -> None: ...


class CallsApi:
    """The REST surface of one simulated account: creates, fetches and updates Call resources."""

    def __init__(self, personas: PersonaBook, account_sid: str, auth_token: str,
                 control: CallControl) -> None:
        self.personas = personas
        self.account_sid = account_sid
        self._auth_token = auth_token
        self._control = control
        self.calls: dict[str, SimCall] = {}
        self.stats = AccountStats()
        self.faults = RestFaults()
        self.pricing = CallPricing()
        self.app = self._build_app()

    def call_ended(self, call: SimCall) -> None:
        """Bookkeeping when a call reaches its final status."""
        self.stats.live -= 1
        call.price = self.pricing.price(call.duration)
        call.price_null_reads = 10**9 if call.to in self.pricing.never_priced else self.pricing.null_reads

    def reported_price(self, call: SimCall) -> Decimal | None:
        """The price a fetch shows: null until the call is final and for its first `null_reads` fetches after."""
        if call.price is None:
            return None
        call.price_fetches += 1
        if call.price_null_reads > 0:
            call.price_null_reads -= 1
            return None
        return call.price

    def _authenticate(self, request: Request, account_sid: str) -> None:
        header = request.headers.get("authorization", "")
        user = password = ""
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                pass
        ok = secrets.compare_digest(password.encode(), self._auth_token.encode())
        if not (ok and user == self.account_sid and account_sid == self.account_sid):
            raise TwilioApiError(401, 20003, "Authenticate")

    def _find(self, account_sid: str, call_sid: str) -> SimCall:
        call = self.calls.get(call_sid)
        if call is None:
            resource = f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}.json"
            raise TwilioApiError(404, 20404, f"The requested resource {resource} was not found")
        return call

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Twilio stand-in", openapi_url=None, docs_url=None, redoc_url=None)
        prefix = f"/{API_VERSION}/Accounts/{{account_sid}}/Calls"

        @app.exception_handler(TwilioApiError)
        async def _api_error(_: Request, exc: TwilioApiError) -> JSONResponse:
            return exc.response()

        @app.post(prefix + ".json")
        async def create_call(account_sid: str, request: Request) -> JSONResponse:
            self._authenticate(request, account_sid)
            form = await request.form()
            params = {k: [str(v) for v in form.getlist(k)] for k in form}
            self._create_fault()
            call = self._create(params)
            if self.faults.slow_creates > 0:
                self.faults.slow_creates -= 1
                self.faults.serve("slow-create", 201)
                await asyncio.sleep(self.faults.slow_create_s)  # the client has given up by now
            return JSONResponse(call_resource(call), status_code=201)

        @app.get(prefix + ".json")
        async def list_calls(account_sid: str, request: Request) -> JSONResponse:
            self._authenticate(request, account_sid)
            return JSONResponse(self._list(account_sid, dict(request.query_params)))

        @app.get(prefix + "/{call_sid}.json")
        async def fetch_call(account_sid: str, call_sid: str, request: Request) -> JSONResponse:
            self._authenticate(request, account_sid)
            call = self._find(account_sid, call_sid)
            return JSONResponse(call_resource(call, price=self.reported_price(call)))

        @app.get(f"/{API_VERSION}/Accounts/{{account_sid}}/Recordings/{{name}}")
        async def recording_media(account_sid: str, name: str, request: Request) -> Response:
            self._authenticate(request, account_sid)
            sid, _, extension = name.partition(".")
            found = next(((c, r) for c in self.calls.values() for r in c.recordings if r.sid == sid), None)
            if found is None or found[1].status != "completed":
                resource = f"/{API_VERSION}/Accounts/{account_sid}/Recordings/{name}"
                raise TwilioApiError(404, 20404, f"The requested resource {resource} was not found")
            if extension != "wav":
                raise TwilioApiError(415, 20415, "the stand-in serves recordings as .wav only")
            call, rec = found
            rec.media_fetches += 1
            return Response(recording_wav(call, rec), media_type="audio/x-wav")

        @app.post(prefix + "/{call_sid}.json")
        async def update_call(account_sid: str, call_sid: str, request: Request) -> JSONResponse:
            self._authenticate(request, account_sid)
            call = self._find(account_sid, call_sid)
            form = await request.form()
            await self._update(call, {k: str(v) for k, v in form.items()})
            return JSONResponse(call_resource(call))

        return app

    def _create_fault(self) -> None:
        f = self.faults
        if f.rate_limited_creates > 0:
            f.rate_limited_creates -= 1
            f.serve("rate-limited", 429)
            raise RateLimited(f.retry_after_s)
        if f.failing_creates > 0:
            f.failing_creates -= 1
            f.serve("server-error", f.failing_status)
            raise TwilioApiError(f.failing_status, 20500, "Internal Server Error")

    def _create(self, params: dict[str, list[str]]) -> SimCall:
        def first(name: str) -> str:
            return (params.get(name) or [""])[0].strip()

        to, from_, url, twiml = first("To"), first("From"), first("Url"), first("Twiml")
        if not to:
            raise TwilioApiError(400, 21201, "No 'To' number is specified")
        if not from_:
            raise TwilioApiError(400, 21213, "No 'From' number is specified")
        persona = self.personas.dialed(to)
        if not E164.match(to) or (persona is not None and persona.answer == "invalid-number"):
            raise TwilioApiError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not url and not twiml:
            raise TwilioApiError(400, 21205, "Url parameter is required (give Url or Twiml).")
        if not url and len(twiml) > MAX_INLINE_TWIML:
            raise TwilioApiError(400, 32018,
                                 f"Twiml is {len(twiml)} characters; the maximum is {MAX_INLINE_TWIML}.")
        now = datetime.now(UTC)
        call = SimCall(sid=new_sid("CA"), account_sid=self.account_sid, to=to, from_=from_, params=params,
                       persona=persona, created_at=asyncio.get_running_loop().time(), date_created=now,
                       date_updated=now)
        self.calls[call.sid] = call
        self.stats.created_at.append(call.created_at)
        self.stats.live += 1
        self.stats.max_live = max(self.stats.max_live, self.stats.live)
        logger.info("call %s created to %s (persona: %s)", call.sid, to, persona and persona.business)
        self._control.start_call(call)
        return call

    def _list(self, account_sid: str, query: dict[str, str]) -> dict[str, Any]:
        """One page of calls, newest first, filtered like Twilio's list (To, From, Status, Start/EndTime)."""
        calls = sorted(self.calls.values(), key=lambda c: c.date_created, reverse=True)
        for name, attr in (("To", "to"), ("From", "from_"), ("Status", "status")):
            if query.get(name):
                calls = [c for c in calls if getattr(c, attr) == query[name]]
        for name, attr in (("StartTime", "start_time"), ("EndTime", "end_time")):
            for op in ("", ">", "<"):
                if query.get(name + op):
                    bound = _parse_when(name + op, query[name + op])
                    calls = [c for c in calls if _time_matches(getattr(c, attr), op, bound)]
        try:
            size = min(1000, max(1, int(query.get("PageSize") or 50)))
            page = max(0, int(query.get("Page") or 0))
        except ValueError as exc:
            raise TwilioApiError(400, 20001, f"Invalid Page or PageSize: {exc}") from exc
        chunk = calls[page * size:(page + 1) * size]
        base = f"/{API_VERSION}/Accounts/{account_sid}/Calls.json"

        def uri(n: int) -> str:
            return f"{base}?{urlencode({**query, 'PageSize': size, 'Page': n})}"

        return {"calls": [call_resource(c) for c in chunk], "start": page * size,
                "end": page * size + max(0, len(chunk) - 1), "page": page, "page_size": size,
                "first_page_uri": uri(0), "uri": uri(page),
                "next_page_uri": uri(page + 1) if (page + 1) * size < len(calls) else None,
                "previous_page_uri": uri(page - 1) if page > 0 else None}

    async def _update(self, call: SimCall, form: dict[str, str]) -> None:
        call.updates.append(form)
        status = form.get("Status")
        if status:
            if status not in ("completed", "canceled"):
                raise TwilioApiError(400, 20001, f"Status must be 'completed' or 'canceled', not {status!r}")
            if call.status in FINAL_STATUSES:
                if self.faults.hangup_ended_21220:
                    raise TwilioApiError(400, 21220, "Call is not in-progress. Cannot update.")
                return  # the lenient variant: hanging up an ended call succeeds and changes nothing
            if status == "canceled" and call.status == "in-progress":
                return  # `canceled` only affects queued or ringing calls
            await self._control.hang_up(call, status)
            return
        url, twiml = form.get("Url"), form.get("Twiml")
        if url or twiml:
            if call.status != "in-progress":
                raise TwilioApiError(400, 21220, "Call is not in-progress. Cannot redirect.")
            source = ("url", url, form.get("Method") or "POST") if url else ("twiml", twiml or "", "")
            self._control.redirect(call, source)


def recording_wav(call: SimCall, rec: SimRecording) -> bytes:
    """The recording as a WAV file: 8 kHz 16-bit PCM, `rec.channels` channels, `rec.duration` seconds.

    Dual channel puts the callee on the first channel and the agent on the second, as Twilio lays out an
    outbound call (the dialled party first)."""
    frames = SAMPLE_RATE * (rec.duration or 0)
    agent = audioop.ulaw2lin(bytes(call.played_audio[:frames]), 2).ljust(frames * 2, b"\0")
    pcm = audioop.tostereo(agent, 2, 0, 1) if rec.channels == 2 else agent
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(rec.channels)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    return out.getvalue()


def _parse_when(name: str, raw: str) -> datetime:
    """The SDK sends `YYYY-MM-DDTHH:MM:SSZ`; Twilio also takes a bare date."""
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise TwilioApiError(400, 20001, f"Invalid {name}: {raw!r}")


def _time_matches(value: datetime | None, op: str, bound: datetime) -> bool:
    if value is None:
        return False
    if op == ">":
        return value >= bound
    if op == "<":
        return value <= bound
    return value.date() == bound.date()
