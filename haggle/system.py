"""Composition root: start services on a Runtime and serve their routes on one HTTP port.

`haggle up` = every service, one process, one port (the embedded default).
`haggle run SERVICE` = one service per process (the deployed shape; scale each independently).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .config import Settings
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

        return await dispatcher.start(rt)
    if name == "media-gateway":
        from haggle_gateway import run as gateway

        return await gateway.start(rt)
    if name == "extractor":
        from haggle_extractor import run as extractor

        return await extractor.start(rt, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")


def build_app(handles: Iterable[ServiceHandle], *, title: str = "Haggle") -> FastAPI:
    app = FastAPI(title=title)

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
    _serve_task: asyncio.Task[None] | None = None

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
        if self._serve_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._serve_task, deadline_s)
        await self.rt.close()
        if self.nats is not None:
            self.nats.stop()


async def start_system(
    settings: Settings,
    services: Iterable[str] = SERVICES,
    *,
    nats_url: str | None = None,
    port: int | None = None,
    service_options: dict[str, dict[str, object]] | None = None,
) -> System:
    """Start NATS (embedded unless a URL is configured), the services and the HTTP server."""
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
        app = build_app(handles)
        config = uvicorn.Config(app, host=settings.host, port=settings.port if port is None else port,
                                log_level="warning", lifespan="off", ws_max_size=65536)
        server = uvicorn.Server(config)
        system = System(settings=settings, rt=rt, handles=handles, server=server, port=0, nats=embedded)
        system._serve_task = asyncio.create_task(server.serve())
        while not server.started:
            if system._serve_task.done():
                system._serve_task.result()
                raise RuntimeError("HTTP server exited at start")
            await asyncio.sleep(0.01)  # uvicorn exposes no start event to await
        system.port = server.servers[0].sockets[0].getsockname()[1]
        # Everything built so far lives as long as the process: keep it out of every later GC pass (a full
        # collection of a started gateway scanned ~75k objects, a 15-35 ms pause in the audio path).
        gc.freeze()
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
