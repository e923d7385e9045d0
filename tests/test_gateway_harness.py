"""A loopback world for the media gateway's integration tests, and a check that the world itself works.

`GatewayHarness` runs, in the test's event loop: the gateway router under uvicorn on 127.0.0.1:0, the xAI
realtime stand-in, the Twilio stand-in (REST API, signed webhooks, a Media Streams client that keeps
Twilio's playback clock), and the real nats-server from the `nc` fixture. `dial()` does what the dispatcher
does: store a CallContext in KV, create the call through the official Twilio SDK, then store the CallSid.
Every event published on `haggle.job.>` is collected in order for assertions.

Other test modules import it (`from test_gateway_harness import GatewayHarness`): pytest puts this directory
on sys.path for rootdir-level test modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from haggle_contracts import codec, subjects
from haggle_contracts import events as ev
from haggle_contracts.calls import CallContext, ctx_key, encode_context
from haggle_gateway.app import GatewayService, start_gateway
from haggle_gateway.settings import GatewaySettings
from haggle_sim.http_server import serve_app
from haggle_sim.personas import Persona, PersonaBook
from haggle_sim.realtime_standin import RealtimeStandin
from haggle_sim.twilio_standin import TwilioStandin
from twilio.rest import Client

from haggle import bus

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token-0123456789"
XAI_KEY = "xai-test-key"
FROM_NUMBER = "+14155550000"


class GatewayHarness:
    def __init__(self, nc: Any, personas: PersonaBook, *, realtime: dict[str, Any] | None = None,
                 twilio: dict[str, Any] | None = None, **settings: Any) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.personas = personas
        self._realtime_kwargs = realtime or {}
        self._twilio_kwargs = {"reply_gap_ms": 250, **(twilio or {})}
        self._settings_overrides = settings
        self.events: list[ev.Event] = []
        self.arrived_at: dict[str, float] = {}  # event_id -> loop time it reached the test's subscription
        self._changed = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self.service: GatewayService
        self.settings: GatewaySettings
        self.realtime: RealtimeStandin
        self.twilio: TwilioStandin
        self.base_url = ""

    async def __aenter__(self) -> GatewayHarness:
        await self._stack.__aenter__()
        try:
            await self._start()
        except BaseException:
            await self._stack.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        self.kv = await self.js.key_value(subjects.KV_CALLS)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.realtime = await self._stack.enter_async_context(
            RealtimeStandin(self.personas, api_key=XAI_KEY, **self._realtime_kwargs))
        self.twilio = await self._stack.enter_async_context(
            TwilioStandin(self.personas, ACCOUNT_SID, AUTH_TOKEN, **self._twilio_kwargs))
        values: dict[str, Any] = {
            "public_base_url": self.base_url,
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": AUTH_TOKEN,
            "twilio_api_base_url": self.twilio.base_url,
            "xai_api_key": XAI_KEY,
            "xai_realtime_url": self.realtime.url,
            "vad_silence_ms": 300,
            "silence_timeout_s": 8.0,
            "hangup_fallback_s": 3.0,
            "transcript_settle_s": 0.5,
        }
        values.update(self._settings_overrides)
        self.settings = GatewaySettings(**values)
        sub = await self.nc.subscribe(f"{subjects.PREFIX}.job.>", cb=self._on_event)
        self._stack.push_async_callback(sub.unsubscribe)
        self.service = await start_gateway(self.nc, self.js, self.settings, bus.Publisher(self.js, deadline_s=10))
        app = FastAPI()
        app.include_router(self.service.router)
        try:
            await self._stack.enter_async_context(serve_app(
                app, sock=sock, startup_timeout=5, shutdown_timeout=5, name="gateway under test",
                access_log=False, timeout_graceful_shutdown=1))
        except BaseException:
            await self.service.stop(2.0)
            raise
        self._stack.push_async_callback(self.service.stop, 2.0)  # runs first: the gateway stops, then its server

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.__aexit__(None, None, None)

    async def _on_event(self, msg: Any) -> None:
        try:
            event = codec.decode(msg.data)
        except codec.EventDecodeError:
            return
        self.events.append(event)
        self.arrived_at.setdefault(event.event_id, asyncio.get_running_loop().time())
        self._changed.set()

    # -------------------------------------------------------------------------------------------- helpers

    def context(self, persona: Persona, *, call_id: str | None = None, job_id: str = "job1",
                provider_id: str = "p1", **overrides: Any) -> CallContext:
        values: dict[str, Any] = {
            "call_id": call_id or f"c_{secrets.token_hex(6)}",
            "job_id": job_id,
            "provider_id": provider_id,
            "attempt": 1,
            "service_provider": persona.business,
            "phone_number": persona.phone,
            "problem": "leaking kitchen faucet",
            "zip_code": "94110",
            "max_price": 180.0,
            "token": secrets.token_urlsafe(32),
        }
        values.update(overrides)
        return CallContext(**values)

    async def store(self, ctx: CallContext) -> None:
        await self.kv.put(ctx_key(ctx.call_id), encode_context(ctx))

    async def dial(self, persona: Persona, *, amd: str = "Enable", **ctx_fields: Any) -> CallContext:
        """What the dispatcher does: context in KV, calls.create through the SDK, then the CallSid in KV.
        `amd`: the MachineDetection mode (Enable or DetectMessageEnd)."""
        ctx = self.context(persona, **ctx_fields)
        await self.store(ctx)
        client = Client(ACCOUNT_SID, AUTH_TOKEN)
        client.api.base_url = self.twilio.base_url
        base, cid = self.base_url, ctx.call_id
        call = await asyncio.to_thread(
            client.calls.create, to=persona.phone, from_=FROM_NUMBER, url=f"{base}/twiml?call_id={cid}",
            status_callback=f"{base}/twilio/status?call_id={cid}",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            machine_detection=amd, async_amd="true",
            async_amd_status_callback=f"{base}/twilio/amd?call_id={cid}", timeout=20, time_limit=120)
        ctx.call_sid = call.sid
        await self.store(ctx)
        return ctx

    async def wait_for_event(self, predicate: Callable[[ev.Event], bool], timeout_s: float = 20.0) -> ev.Event:
        async def until() -> ev.Event:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(until(), timeout_s)

    async def wait_ended(self, call_sid: str, timeout_s: float = 30.0) -> ev.CallEnded:
        event = await self.wait_for_event(lambda e: isinstance(e, ev.CallEnded) and e.call_sid == call_sid,
                                          timeout_s)
        assert isinstance(event, ev.CallEnded)
        return event

    def of(self, kind: type[ev.Event], call_sid: str | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and (call_sid is None or
                                                                   getattr(e, "call_sid", None) == call_sid)]


async def test_harness_serves_the_gateway_and_signs_like_twilio(nc) -> None:  # type: ignore[no-untyped-def]
    """The harness' own plumbing: the router is served, and an unsigned webhook is refused."""
    import httpx

    async with GatewayHarness(nc, PersonaBook()) as h, httpx.AsyncClient(trust_env=False) as http:
        response = await http.post(f"{h.base_url}/twilio/status?call_id=x", data={"CallSid": "CA1"})
        assert response.status_code == 403
        assert h.realtime.connections == 0
