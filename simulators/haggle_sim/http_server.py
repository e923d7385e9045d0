"""Serve an ASGI app on loopback inside the current asyncio loop, for stand-ins and tests.

Why: the PostgREST, xAI chat and Twilio stand-ins and several tests each ran uvicorn as a task with their own
copy of the same boilerplate (a `uvicorn.Server` on 127.0.0.1 port 0, a wait for it to listen, the bound port
read back, then `should_exit` and an await of the task). This is that code once, with what every copy needs:

- the wait for startup wakes on a readiness event (no polling) and is bounded: a server that is not listening
  within `startup_timeout` (or that exits while starting, e.g. a port in use) raises RuntimeError;
- no signal handlers: the host process (pytest, `haggle demo`) owns SIGINT/SIGTERM, and servers that each
  install and later restore handlers would restore each other's out of order when several share one loop;
- a bounded stop: past its timeout the server task is cancelled, with a warning, so nothing is left running.

    async with serve_app(app) as served:
        ...  # point a client at served.base_url ("http://127.0.0.1:<port>")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the caller's loop: no signal handlers (the host process owns them), a startup event."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


class ServedApp:
    """A running server: where it listens (`port`, `base_url`), the `uvicorn.Server`, and `stop()`."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], host: str, port: int, name: str,
                 shutdown_timeout: float) -> None:
        self.server = server
        self.host = host
        self.port = port
        self._task = task
        self._name = name
        self._shutdown_timeout = shutdown_timeout
        self._stopped = False

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self, timeout_s: float | None = None) -> None:
        """Ask uvicorn to exit and wait for it, at most `timeout_s` (default: the `shutdown_timeout` given to
        `serve_app`), then cancel it. An error the server task raised is raised here. Only the first call
        does anything."""
        if self._stopped:
            return
        self._stopped = True
        self.server.should_exit = True
        limit = self._shutdown_timeout if timeout_s is None else timeout_s
        try:
            await asyncio.wait_for(self._task, limit)  # cancels the task on timeout
        except TimeoutError:
            log.warning("%s did not stop within %.1fs; cancelled", self._name, limit)


async def _serve(server: uvicorn.Server, sockets: list[socket.socket] | None) -> None:
    try:
        await server.serve(sockets=sockets)
    except SystemExit as exc:  # uvicorn exits the process when it cannot bind or start; here that is an error
        raise RuntimeError(f"uvicorn exited while starting (exit code {exc.code})") from None


@contextlib.asynccontextmanager
async def serve_app(app: Any, host: str = "127.0.0.1", port: int = 0, *, startup_timeout: float = 10.0,
                    shutdown_timeout: float = 10.0, sock: socket.socket | None = None,
                    name: str = "embedded HTTP server", **config: Any) -> AsyncIterator[ServedApp]:
    """Serve `app` on `host:port` (port 0: a free one) until the block ends.

    `sock`: an already bound socket to serve on instead (for a caller that must know the port before the app
    exists); it is closed when the server stops. `name` is for log and error messages. Other keyword arguments
    go to `uvicorn.Config` (defaults here: log_level="warning", lifespan="off", and idle connections kept 75 s, as
    the services do: longer than a client's pool keeps them, so a reused connection is never one being closed).
    """
    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "off")
    config.setdefault("timeout_keep_alive", 75)
    server = _EmbeddedServer(uvicorn.Config(app, host=host, port=port, **config))
    task = asyncio.create_task(_serve(server, None if sock is None else [sock]), name=f"{name} (uvicorn)")
    served = ServedApp(server, task, host, port, name, shutdown_timeout)
    try:
        ready = asyncio.create_task(server.ready.wait())
        try:
            await asyncio.wait({ready, task}, timeout=startup_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not server.ready.is_set():
            why = "the server exited" if task.done() else f"not listening within {startup_timeout}s"
            with contextlib.suppress(Exception):  # the task's own error becomes the cause below
                await served.stop()
            cause = task.exception() if task.done() and not task.cancelled() else None
            raise RuntimeError(f"{name} did not start on {host}:{port} ({why})") from cause
        bound = server.servers[0].sockets[0].getsockname()
        served.port = bound[1]
        if sock is not None:
            served.host = bound[0]
        yield served
    finally:
        await served.stop()  # does nothing after the stop above
        if sock is not None:
            sock.close()
