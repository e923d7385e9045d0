"""The gateway's HTTP and WebSocket surface, and its start/stop for the composition root.

Routes (all Twilio-facing; every webhook is signature-checked over the URL built from PUBLIC_BASE_URL):
- `POST /twiml?call_id=`: `<Connect><Stream url="wss://.../media-stream">` with `<Parameter>`s `call_id` and
  `token` (Twilio strips query strings from stream URLs), and starts prewarming the realtime session.
- `POST /twilio/status?call_id=` -> CallStatusChanged; `POST /twilio/amd?call_id=` -> MachineDetected.
- `WS /media-stream`: accepted only after a valid `start` within `start_deadline_s` whose single-use token
  and CallSid match the stored context; everything else is closed with 1008 before any realtime session is
  opened (and counted in `registry.stats` and the `haggle_streams_rejected_total` metric).

Draining (`GatewayService.stop`, on SIGTERM): live calls go on until they end or the deadline passes; new
work is refused so Twilio and the balancer send it elsewhere: `/twiml` answers 503 and a new media stream is
closed with 1013 ("try again later"). Status and AMD callbacks are still taken: they end live calls.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlencode

import msgspec
from fastapi import APIRouter, Request, Response, WebSocket
from haggle_contracts import events as ev
from haggle_contracts import ids, subjects
from haggle_contracts.calls import CallContext, ctx_key, encode_context
from starlette.websockets import WebSocketDisconnect, WebSocketState
from twilio.twiml.voice_response import Connect, VoiceResponse

from haggle import metrics
from haggle.bus import TRANSIENT_ERRORS
from haggle.twilio_recording import CALLBACK_PATH as RECORDING_CALLBACK
from haggle.twilio_recording import recording_event, start_recording

from . import prompt
from . import realtime_events as rt
from . import twilio_media as tm
from .bridge import CallBridge, Frame, Hangup
from .contexts import CallContexts, ClaimRejected, about_call
from .inbound import INBOUND_PATH, Callbacks, unknown_caller_twiml
from .live_calls import LiveCalls
from .outbox import EventOutbox, EventPublisher
from .realtime_client import RealtimeClient, RealtimeError
from .settings import GatewaySettings, mask_secret
from .transfer import ACTION_PATH as TRANSFER_ACTION_PATH
from .transfer import WHISPER_PATH as TRANSFER_WHISPER_PATH
from .transfer import HomeownerTransfers, whisper_line
from .transfer import outcome_of as transfer_outcome
from .twilio_rest import TwilioHangup
from .twilio_webhooks import SIGNATURE_HEADER, WebhookValidator
from .ws_server import SCOPE_KEY

log = logging.getLogger(__name__)

RealtimeOpener = Callable[[CallContext], Awaitable[RealtimeClient]]
WEBHOOK_BUDGET_S = 12.0  # Twilio waits 15 s for a webhook response by default
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013


def realtime_opener(settings: GatewaySettings, *, resumed: bool = False) -> RealtimeOpener:
    """Opens and configures a realtime session with this call's brief, voice, VAD and audio format.
    `resumed`: for a session reopened mid-call (the instructions say so; the bridge replays the conversation)."""

    async def open_session(ctx: CallContext) -> RealtimeClient:
        brief = prompt.CallBrief.from_context(ctx)
        instructions = prompt.build_instructions(brief, settings.ai_disclosure, resumed=resumed,
                                                 notice=settings.opening_notice)
        session = rt.session_config(settings, instructions, prompt.tools(booking=ctx.booking is not None))
        return await RealtimeClient.open(settings, session)

    return open_session


@dataclass
class GatewayDeps:
    settings: GatewaySettings
    publisher: EventPublisher
    contexts: CallContexts
    hangup: Hangup
    registry: LiveCalls
    open_realtime: RealtimeOpener | None = None
    reopen_realtime: RealtimeOpener | None = None  # mid-call, after the session was lost
    validator: WebhookValidator | None = field(default=None, repr=False)
    callbacks: Callbacks | None = None  # callbacks to TWILIO_PHONE_NUMBER (inbound.py); None: not answered
    transfers: HomeownerTransfers | None = None  # transfer_to_homeowner (transfer.py); None: never available

    def __post_init__(self) -> None:
        if self.open_realtime is None:
            self.open_realtime = realtime_opener(self.settings)
        if self.reopen_realtime is None:
            self.reopen_realtime = realtime_opener(self.settings, resumed=True)
        if self.validator is None:
            self.validator = WebhookValidator(self.settings)


class StreamRejected(Exception):
    def __init__(self, reason: str, code: int = POLICY_VIOLATION) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class StarletteLink:
    """The bridge's TwilioLink over an accepted Starlette WebSocket.

    Frames go straight to the server's WebSocket protocol (`ws_server`, found in the scope) when it is ours, else
    through the connection's ASGI receive/send callables: Starlette's wrapper re-checks its state machine and
    builds a message per frame, which at 100 frames a second per call is measurable (benchmarks/README.md).
    Accept and close still go through the wrapper, so its state stays right."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        lean = websocket.scope.get("extensions", {}).get(SCOPE_KEY)
        # the ASGI callables Starlette wraps (set in its constructor), or the protocol's own
        self._receive = websocket._receive if lean is None else lean.receive
        self._send = websocket._send
        self._send_data = None if lean is None else lean.send_data
        self._lean = lean
        self._closed = False

    def attach(self, feed: Callable[[str], bool] | None) -> None:
        """Offer each text frame to `feed` as it is read, while nothing is queued ahead of it (see `ws_server`);
        frames it declines (False) are received as usual. A feed that raises is detached and its frame received as
        usual, so the failure surfaces where the receiving task handles it. None detaches."""
        if self._lean is not None:
            self._lean.sink = feed

    async def receive(self) -> Frame:
        if self._closed:
            return Frame(closed=True)
        try:
            message = await self._receive()
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed = True
            return Frame(closed=True)
        if message["type"] != "websocket.receive":  # websocket.disconnect
            self._closed = True
            return Frame(closed=True)
        text = message.get("text")
        if text is not None:
            return Frame(text=text)
        return Frame(binary=message.get("bytes") or b"")

    @property
    def writable_now(self) -> bool:
        lean = self._lean
        return lean is not None and lean.can_write and not self._closed

    def send_now(self, *texts: str) -> None:
        lean = self._lean
        if lean is None or self._closed or not lean.accepted_open:
            raise WebSocketDisconnect(code=1006)
        lean.write_texts(texts)

    async def send(self, text: str) -> None:
        if self._closed:
            raise WebSocketDisconnect(code=1006)
        if self._send_data is not None:
            await self._send_data(text.encode())
        else:
            await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._ws.application_state != WebSocketState.CONNECTED or self._closed:
            return
        self._closed = True
        try:
            await self._ws.close(code=code, reason=reason[:120])
        except RuntimeError:
            pass


async def read_start(link: StarletteLink, guard: tm.FrameGuard) -> tm.Start:
    """Frames up to `start`: `connected` may precede it; anything else is a reason to hang up on the peer."""
    loop = asyncio.get_running_loop()
    while True:
        frame = await link.receive()
        if frame.closed:
            raise StreamRejected("closed_before_start")
        violation = guard.check(frame.size, loop.time())
        if violation is not None:
            raise StreamRejected(violation, MESSAGE_TOO_BIG if violation == "frame_too_large" else POLICY_VIOLATION)
        if frame.text is None:
            raise StreamRejected("binary_frame")
        try:
            message = tm.parse_message(frame.text)
        except tm.MediaMessageError as exc:
            raise StreamRejected("malformed_frame") from exc
        if isinstance(message, tm.Connected):
            continue
        if isinstance(message, tm.Start):
            return message
        raise StreamRejected("unexpected_event_before_start")


def _twiml(settings: GatewaySettings, ctx: CallContext, *, record: bool = True) -> str:
    response = VoiceResponse()
    if settings.record_calls and record:  # recording starts before the stream, so the notice in the opening is on it
        response.append(start_recording(settings.public_url(RECORDING_CALLBACK, urlencode({"call_id": ctx.call_id}))))
    connect = Connect()
    stream = connect.stream(url=settings.stream_url)
    stream.parameter(name="call_id", value=ctx.call_id)
    stream.parameter(name="token", value=ctx.token)
    response.append(connect)
    return str(response.to_xml(xml_declaration=True))


def _xml(twiml: str) -> Response:
    return Response(twiml, media_type="application/xml")


def _try_again() -> Response:
    return Response(status_code=503, headers={"Retry-After": "1"})


def _seconds(form: dict[str, str], field: str) -> float | None:
    """A duration Twilio sends as a form field; None when it is missing or not a number."""
    try:
        return float(form[field]) if form.get(field) else None
    except ValueError:
        return None


class Callback(NamedTuple):
    """A per-call webhook that passed its checks; `started` is when it arrived (the publish budget counts from it)."""

    ctx: CallContext
    form: dict[str, str]
    call_sid: str
    value: str  # the field the webhook is about (CallStatus, AnsweredBy, ...)
    started: float


CallbackHandler = Callable[[Callback], Awaitable[Response]]


def _hangup_twiml() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml(xml_declaration=True))


def build_router(deps: GatewayDeps) -> APIRouter:
    router = APIRouter()
    settings, registry, contexts = deps.settings, deps.registry, deps.contexts
    validator = deps.validator
    assert validator is not None and deps.open_realtime is not None
    open_realtime = deps.open_realtime

    async def signed_form(request: Request) -> dict[str, str] | None:
        form = await request.form()
        if not validator.is_valid(request.url.path, request.url.query, form, request.headers.get(SIGNATURE_HEADER)):
            registry.count(f"bad_signature:{request.url.path}")
            log.warning("rejected %s: invalid Twilio signature", request.url.path)
            return None
        return {k: v for k, v in form.items() if isinstance(v, str)}

    async def context_of(call_id: str | None, kind: str) -> CallContext | Response | None:
        """The call's context; a 503 response if the bus stayed unreachable through the retry budget."""
        try:
            return await contexts.get(call_id)
        except TRANSIENT_ERRORS as exc:
            registry.count(f"{kind}_bus_unavailable")
            log.error("%s webhook: call context unreadable (%s); answering 503", kind, exc or type(exc).__name__)
            return _try_again()

    async def call_callback(request: Request, field: str, kind: str) -> Callback | Response:
        """A signed per-call callback: its context, form, CallSid and `field`; or the response that ends it
        (403 for a bad signature, 204 for an unknown call or missing fields, which Twilio need not retry)."""
        started = asyncio.get_running_loop().time()
        form = await signed_form(request)
        if form is None:
            return Response(status_code=403)
        ctx = await context_of(request.query_params.get("call_id"), kind)
        if isinstance(ctx, Response):
            return ctx
        call_sid, value = form.get("CallSid", ""), form.get(field, "")
        if ctx is None or not call_sid or not value:
            registry.count(f"{kind}_unknown_call")
            log.warning("%s callback without a known call or fields; ignored", kind)
            return Response(status_code=204)
        return Callback(ctx, form, call_sid, value, started)

    def per_call_webhook(path: str, field: str, kind: str) -> Callable[[CallbackHandler], CallbackHandler]:
        """Route POST `path` to a handler that runs only for a checked callback (see `call_callback`)."""
        def register(handle: CallbackHandler) -> CallbackHandler:
            async def endpoint(request: Request) -> Response:
                found = await call_callback(request, field, kind)
                return found if isinstance(found, Response) else await handle(found)

            # Not functools.wraps: FastAPI would read the handler's signature as the route's parameters.
            endpoint.__name__, endpoint.__doc__ = handle.__name__, handle.__doc__
            router.post(path)(endpoint)
            return handle
        return register

    async def publish(event: ev.Event, started: float) -> Response:
        remaining = max(1.0, started + WEBHOOK_BUDGET_S - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(deps.publisher.publish(event), remaining)
        except Exception as exc:  # Twilio may retry the webhook; the deterministic event id dedupes it
            log.error("publishing %s failed: %s", type(event).__name__, exc)
            return Response(status_code=503)
        return Response(status_code=204)

    @router.post("/twiml")
    async def twiml(request: Request) -> Response:
        form = await signed_form(request)
        if form is None:
            return Response(status_code=403)
        if registry.draining:  # shutting down: Twilio retries the fallback URL / the balancer another replica
            registry.count("twiml_draining")
            return _try_again()
        call_id = request.query_params.get("call_id")
        ctx = await context_of(call_id, "twiml")
        if isinstance(ctx, Response):
            return ctx
        call_sid = form.get("CallSid")
        if ctx is None or ctx.token_used or (ctx.call_sid and call_sid and ctx.call_sid != call_sid):
            registry.count("twiml_unknown_call")
            log.warning("TwiML for unknown or used call %r: hanging up", (call_id or "")[:64])
            return _xml(_hangup_twiml())
        if registry.prewarms.start(ctx.call_id, lambda: open_realtime(ctx)):
            log.info("call %s: prewarming the realtime session", ctx.call_id)
        if deps.callbacks is not None:
            await deps.callbacks.remember(ctx)
        return _xml(_twiml(settings, ctx))

    @router.post(TRANSFER_WHISPER_PATH)
    async def transfer_whisper(request: Request) -> Response:
        """The homeowner answered a transfer: the one-line brief they hear before being bridged."""
        form = await signed_form(request)
        if form is None:
            return Response(status_code=403)
        ctx = await context_of(request.query_params.get("call_id"), "transfer")
        if isinstance(ctx, Response):
            return ctx
        response = VoiceResponse()
        if ctx is not None:
            response.say(whisper_line(ctx))
        return _xml(str(response.to_xml(xml_declaration=True)))

    @per_call_webhook(TRANSFER_ACTION_PATH, "DialCallStatus", "transfer")
    async def transfer_done(found: Callback) -> Response:
        """How the transfer's <Dial> ended: bridged, the call is over; not reached, back to the agent to close."""
        ctx, form, call_sid, dial_status, started = found
        outcome = transfer_outcome(dial_status)
        published = await publish(ev.HomeownerTransfer(
            **about_call(ctx, call_sid), event_id=f"transfer-{call_sid}", outcome=outcome, dial_status=dial_status,
            duration_s=_seconds(form, "DialCallDuration")), started)
        if published.status_code != 204:
            return published
        if outcome == "connected" or deps.callbacks is None:
            return _xml(_hangup_twiml())
        back = msgspec.structs.replace(ctx, token=secrets.token_urlsafe(24), token_used=False, transfer_failed=True)
        await deps.callbacks.calls.put(ctx_key(back.call_id), encode_context(back))
        log.info("call %s: the homeowner was not reached (%s); back to the agent to close", call_sid, dial_status)
        return _xml(_twiml(settings, back, record=False))

    @router.post(INBOUND_PATH)
    async def twilio_inbound(request: Request) -> Response:
        """The voice URL of TWILIO_PHONE_NUMBER: a provider calling back reaches the agent, with its context."""
        started = asyncio.get_running_loop().time()
        form = await signed_form(request)
        if form is None:
            return Response(status_code=403)
        if registry.draining:
            registry.count("inbound_draining")
            return _try_again()
        call_sid, from_number = form.get("CallSid", ""), form.get("From", "")
        try:
            caller = await deps.callbacks.lookup(from_number) if deps.callbacks and from_number else None
            taken = await deps.callbacks.take(caller, call_sid, from_number) if deps.callbacks and caller else None
        except TRANSIENT_ERRORS as exc:
            registry.count("inbound_bus_unavailable")
            log.error("inbound call: the bus is unavailable (%s); answering 503", exc or type(exc).__name__)
            return _try_again()
        if taken is None or not call_sid:
            registry.count("inbound_unknown_caller")
            log.info("inbound call %s from a number Haggle did not call: %s", call_sid[:40],
                     "forwarded" if settings.forward_unknown_to else "one line and a hang-up")
            return _xml(unknown_caller_twiml(settings.forward_unknown_to))
        ctx, event = taken
        if (await publish(event, started)).status_code != 204:
            return _try_again()
        log.info("call %s: %s called back (job %s, attempt %d)", ctx.call_id, ctx.provider_id, ctx.job_id,
                 ctx.attempt)
        if registry.prewarms.start(ctx.call_id, lambda: open_realtime(ctx)):
            log.info("call %s: prewarming the realtime session", ctx.call_id)
        return _xml(_twiml(settings, ctx))

    @per_call_webhook("/twilio/status", "CallStatus", "status")
    async def twilio_status(found: Callback) -> Response:
        ctx, form, call_sid, status, started = found
        duration = _seconds(form, "CallDuration")
        if status in ev.TERMINAL_TWILIO_STATUSES and call_sid in registry.calls:
            registry.calls[call_sid].request_end("provider_hangup")
        return await publish(ev.CallStatusChanged(
            **about_call(ctx, call_sid),
            event_id=ids.call_status_event_id(call_sid, status),
            status=status,
            duration_s=duration,
        ), started)

    @per_call_webhook("/twilio/amd", "AnsweredBy", "amd")
    async def twilio_amd(found: Callback) -> Response:
        ctx, _, call_sid, answered_by, started = found
        event = ev.MachineDetected(
            **about_call(ctx, call_sid),
            event_id=ids.machine_detected_event_id(call_sid),
            answered_by=answered_by,
        )
        # On the log first, then acted on here: the CallEnded a voicemail verdict leads to must not precede it.
        # Other replicas react through the NATS subscription; this one reacts even if the publish failed.
        response = await publish(event, started)
        registry.on_machine_detected(event)
        return response

    @per_call_webhook(RECORDING_CALLBACK, "RecordingSid", "recording")
    async def twilio_recording(found: Callback) -> Response:
        ctx, form, _, _, started = found
        event = recording_event(form, job_id=ctx.job_id, provider_id=ctx.provider_id, attempt=ctx.attempt)
        log.info("call %s: recording %s %s (%ss)", event.call_sid, event.recording_sid, event.status,
                 event.duration_s)
        return await publish(event, started)

    @router.websocket("/media-stream")
    async def media_stream(websocket: WebSocket) -> None:
        if validator.stream_signature_ok(websocket.headers.get("x-twilio-signature")) is False:
            registry.count("stream_signature_mismatch")
            log.warning("media stream upgrade carries a signature that does not match PUBLIC_BASE_URL")
        await websocket.accept()
        link = StarletteLink(websocket)
        if registry.draining:
            registry.count("rejected:draining")
            metrics.STREAMS_REJECTED.labels(reason="draining").inc()
            log.warning("media stream refused: this gateway is draining")
            await link.close(TRY_AGAIN_LATER, "draining")
            return
        loop = asyncio.get_running_loop()
        guard = tm.FrameGuard(settings.max_frame_bytes, settings.max_messages_per_s)
        try:
            start = await asyncio.wait_for(read_start(link, guard), settings.start_deadline_s)
            started_at = loop.time()
            params = start.parameters
            ctx = await contexts.claim(params.get("call_id"), params.get("token"), start.call_sid)
        except (TimeoutError, StreamRejected, ClaimRejected) as exc:
            reason = "start_timeout" if isinstance(exc, TimeoutError) else exc.reason  # type: ignore[union-attr]
            code = exc.code if isinstance(exc, StreamRejected) else POLICY_VIOLATION
            registry.count(f"rejected:{reason}")
            metrics.STREAMS_REJECTED.labels(reason=reason).inc()
            log.warning("media stream rejected: %s", reason)
            await link.close(code, reason)
            return
        except Exception:
            registry.count("rejected:error")
            metrics.STREAMS_REJECTED.labels(reason="error").inc()
            log.exception("media stream acceptance failed")
            await link.close(1011, "internal error")
            return
        registry.count("accepted")
        log.info("call %s accepted (sid %s, token %s)", ctx.call_id, start.call_sid, mask_secret(params.get("token")))
        await run_call(deps, ctx, start, link, guard, started_at)

    return router


async def run_call(deps: GatewayDeps, ctx: CallContext, start: tm.Start, link: StarletteLink,
                   guard: tm.FrameGuard, started_at: float) -> None:
    settings, registry = deps.settings, deps.registry
    open_realtime, reopen_realtime = deps.open_realtime, deps.reopen_realtime
    assert open_realtime is not None and reopen_realtime is not None
    outbox = EventOutbox(deps.publisher, label=start.call_sid)
    realtime = await registry.prewarms.take(ctx.call_id, settings.realtime_connect_timeout_s)
    if realtime is None:
        try:
            realtime = await open_realtime(ctx)
        except (RealtimeError, OSError) as exc:
            log.error("call %s: cannot open the realtime session: %s", start.call_sid, exc,
                      extra={"call_sid": start.call_sid, "job_id": ctx.job_id, "provider_id": ctx.provider_id})
            metrics.REALTIME_ERRORS.labels(kind="connect_failed").inc()
            registry.count("ended:realtime_error")
            outbox.put(ev.CallEnded(**about_call(ctx, start.call_sid), event_id=ids.call_ended_event_id(start.call_sid),
                                    reason="realtime_error"))
            try:
                await deps.hangup(start.call_sid)
            except Exception as hang_exc:
                log.warning("call %s: hang-up failed: %s", start.call_sid, hang_exc)
            await outbox.close(settings.publish_flush_s)
            await link.close(1011, "realtime unavailable")
            return
    async def reopen(resumed: bool) -> RealtimeClient:
        return await (reopen_realtime if resumed else open_realtime)(ctx)

    bridge = CallBridge(ctx=ctx, call_sid=start.call_sid, stream_sid=start.stream_sid, link=link, guard=guard,
                        realtime=realtime, settings=settings, outbox=outbox, hangup=deps.hangup,
                        started_at=started_at, reopen=reopen, transfers=deps.transfers)
    registry.register(bridge)
    try:
        reason = await bridge.run()
        registry.count(f"ended:{reason}")
    finally:
        registry.unregister(bridge)


@dataclass
class GatewayService:
    """What the composition root holds: mount `router`, call `stop()` on shutdown."""

    deps: GatewayDeps
    router: APIRouter

    @property
    def registry(self) -> LiveCalls:
        return self.deps.registry

    async def stop(self, deadline_s: float = 10.0) -> None:
        """Refuse new calls, let live ones finish until the deadline, end the rest ('shutdown'), then stop
        reacting to AMD events (kept until then: a voicemail verdict may still end a draining call)."""
        registry = self.deps.registry
        registry.draining = True
        log.info("gateway draining: %d live call(s), deadline %.1fs", len(registry.calls), deadline_s)
        await registry.drain(deadline_s)
        await registry.unsubscribe()


async def start_gateway(
    nc: object,
    js: object,
    settings: GatewaySettings,
    publisher: EventPublisher,
    *,
    hangup: Hangup | None = None,
    open_realtime: RealtimeOpener | None = None,
) -> GatewayService:
    """Wire the gateway: KV-backed contexts, the live-call registry (subscribed to AMD events), Twilio hang-up."""
    kv = await js.key_value(subjects.KV_CALLS)  # type: ignore[attr-defined]
    callers = await js.key_value(subjects.KV_CALLERS)  # type: ignore[attr-defined]
    registry = LiveCalls(prewarm_ttl_s=settings.prewarm_ttl_s)
    deps = GatewayDeps(
        settings=settings,
        publisher=publisher,
        contexts=CallContexts(kv, call_sid_wait_s=settings.call_sid_wait_s),
        hangup=hangup or TwilioHangup(settings),
        registry=registry,
        open_realtime=open_realtime,
        callbacks=Callbacks(js, callers, kv),  # type: ignore[arg-type]
        transfers=HomeownerTransfers(js, settings),  # type: ignore[arg-type]
    )
    await registry.subscribe_amd(nc)  # type: ignore[arg-type]
    return GatewayService(deps=deps, router=build_router(deps))
