"""Composition root: start services on a Runtime and serve their routes on one HTTP port.

`haggle up` = every service, one process, one port (the embedded default).
`haggle run SERVICE` = one service per process (the deployed shape; scale each independently).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from .config import ConfigError, Settings
from .gc_pacing import FullCollections
from .http_guard import AllowedMethods, HttpGuard
from .logs import mask_urls
from .nats_embedded import EmbeddedNats
from .runtime import Runtime, ServiceHandle

log = logging.getLogger(__name__)

SERVICES = ("projector", "dispatcher", "media-gateway", "extractor")


async def start_service(name: str, rt: Runtime, **options: object) -> ServiceHandle:
    if name == "projector":
        from haggle_projector import run as projector

        return await projector.start(rt)
    if name == "dispatcher":
        from haggle_dispatcher import run as dispatcher

        return await dispatcher.start(rt, **options)  # type: ignore[arg-type]
    if name == "media-gateway":
        from haggle_gateway import run as gateway

        return await gateway.start(rt)
    if name == "extractor":
        from haggle_extractor import run as extractor

        return await extractor.start(rt, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")


def refuse_open_bind(settings: Settings) -> None:
    """A non-loopback address without HAGGLE_API_KEY would let anyone who can reach it start calls: refuse."""
    if settings.api_key or settings.insecure_no_auth or _loopback(settings.host):
        return
    raise ConfigError(f"HAGGLE_HOST={settings.host} is not a loopback address and HAGGLE_API_KEY is not set: "
                      "refusing to serve an open API (set HAGGLE_API_KEY, or HAGGLE_INSECURE_NO_AUTH=1)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name that may resolve anywhere


def metrics_guard(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    """/metrics on the main port needs the API key when one is set (METRICS_PORT serves it without)."""

    async def check(request: Request) -> None:
        if not api_key:
            return
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        supplied = supplied or request.headers.get("x-api-key", "")
        if not hmac.compare_digest(supplied.encode(), api_key.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong API key",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


def build_app(
    handles: Iterable[ServiceHandle], *, title: str = "Haggle", settings: Settings | None = None
) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title=title)
    app.add_middleware(AllowedMethods, routes=app.router.routes)  # type: ignore[arg-type]
    app.add_middleware(HttpGuard, max_body_bytes=settings.max_body_bytes)  # type: ignore[arg-type]  # outermost

    @app.exception_handler(ConnectionError)
    async def backing_service_down(request: Request, exc: ConnectionError) -> JSONResponse:
        # A store or log that is down is the server's trouble, not a bug: 503, and the client may retry.
        log.warning("%s %s: %s", request.method, request.url.path, mask_urls(str(exc)))
        return JSONResponse({"detail": "a backing service is unavailable; retry shortly"}, status_code=503,
                            headers={"Retry-After": "5"})

    handles = list(handles)
    for handle in handles:
        for router in handle.routers:
            app.include_router(router)
    names = [h.name for h in handles]
    if "projector" not in names:  # the projector owns /healthz otherwise

        @app.get("/healthz")
        async def healthz() -> JSONResponse:
            return JSONResponse({"status": "ok", "services": names})

    from .metrics import metrics_router

    if settings.metrics_port is None:
        app.include_router(metrics_router(), dependencies=[Depends(metrics_guard(settings.api_key))])
    return app


def metrics_app() -> FastAPI:
    from .metrics import metrics_router

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(metrics_router())
    return app


@dataclass
class System:
    """A running set of services with an HTTP server; `stop()` shuts everything down in order."""

    settings: Settings
    rt: Runtime
    handles: list[ServiceHandle]
    server: uvicorn.Server
    port: int
    nats: EmbeddedNats | None = None
    extra_stops: list[object] = field(default_factory=list)
    metrics_server: uvicorn.Server | None = None
    collections: FullCollections | None = None
    _serve_task: asyncio.Task[None] | None = None
    _metrics_task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def handle(self, name: str) -> ServiceHandle:
        return next(h for h in self.handles if h.name == name)

    async def stop(self, deadline_s: float = 10.0) -> None:
        # Order: stop taking new work, let live calls drain (gateway stop hook), then the server, then NATS.
        for handle in reversed(self.handles):
            await handle.stop(deadline_s)
        self.server.should_exit = True
        if self.metrics_server is not None:
            self.metrics_server.should_exit = True
        for task in (self._serve_task, self._metrics_task):
            if task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, deadline_s)
        await self.rt.close()
        if self.nats is not None:
            self.nats.stop()
        if self.collections is not None:
            self.collections.uninstall()


# A server that closes an idle connection just as a client reuses it fails that request (httpx's pool and uvicorn
# both default to 5 s, so the two expire together). The side that holds a pool (httpx, a proxy's upstream
# keep-alive, a load balancer, at most about 60 s) must give the connection up first.
IDLE_KEEP_ALIVE_S = 75


def uvicorn_options() -> dict[str, Any]:
    """The server options of every process that serves the app (the benchmark's gateway process uses them too).

    `ws`: the media gateway's WebSocket protocol (uvicorn's handshake, lean framing once open; see
    haggle_gateway/ws_server.py), without permessage-deflate (audio hardly compresses, and the lean path reads
    uncompressed frames only; a client that asks for it gets a connection without it). 64 KiB bounds a message:
    a media frame is under 1 KiB."""
    from haggle_gateway.ws_server import LeanWebSocketProtocol

    return {"log_level": "warning", "lifespan": "off", "ws_max_size": 65536, "ws": LeanWebSocketProtocol,
            "ws_per_message_deflate": False, "timeout_keep_alive": IDLE_KEEP_ALIVE_S}


async def start_system(
    settings: Settings,
    services: Iterable[str] = SERVICES,
    *,
    nats_url: str | None = None,
    port: int | None = None,
    service_options: dict[str, dict[str, object]] | None = None,
) -> System:
    """Start NATS (embedded unless a URL is configured), the services and the HTTP server."""
    refuse_open_bind(settings)
    embedded = None
    url = nats_url or settings.nats_url
    if url is None:
        embedded = EmbeddedNats(settings.data_dir / "nats").start()
        url = embedded.url
    rt = await Runtime.connect(settings, url)
    handles: list[ServiceHandle] = []
    try:
        for name in services:
            handles.append(await start_service(name, rt, **(service_options or {}).get(name, {})))
        app = build_app(handles, settings=settings)
        config = uvicorn.Config(app, host=settings.host, port=settings.port if port is None else port,
                                **uvicorn_options())
        server = uvicorn.Server(config)
        system = System(settings=settings, rt=rt, handles=handles, server=server, port=0, nats=embedded)
        system._serve_task = asyncio.create_task(server.serve())
        while not server.started:
            if system._serve_task.done():
                system._serve_task.result()
                raise RuntimeError("HTTP server exited at start")
            await asyncio.sleep(0.01)  # uvicorn exposes no start event to await
        system.port = server.servers[0].sockets[0].getsockname()[1]
        if settings.metrics_port is not None:
            system.metrics_server = uvicorn.Server(uvicorn.Config(
                metrics_app(), host=settings.host, port=settings.metrics_port, log_level="warning", lifespan="off"))
            system._metrics_task = asyncio.create_task(system.metrics_server.serve())
        # Everything built so far lives as long as the process: frozen out of every later GC pass (a full
        # collection of a started gateway scanned ~75k objects, a 15-35 ms pause in the audio path); later full
        # passes only when the heap has doubled (haggle/gc_pacing.py).
        system.collections = FullCollections()
        system.collections.install()
        system.collections.start()
        return system
    except BaseException:
        for h in handles:
            with contextlib.suppress(Exception):
                await h.stop(2)
        await rt.close()
        if embedded:
            embedded.stop()
        raise


async def run_until_signal(system: System, *, drain_s: float = 30.0) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining live calls for up to %.0fs", drain_s)
    await system.stop(drain_s)
