"""A round-robin TCP load balancer on loopback: the stand-in for what sits in front of gateway replicas.

Why: scaling the media gateway means several replicas behind one public URL (Twilio signs webhooks and
opens media streams against that URL). At the TCP level it carries HTTP and WebSocket alike; a backend
that refuses connections (a killed replica) is skipped, as a health-checked balancer would.
`cut()` and `restore()` simulate a network partition in front of the backends (e.g. a database that is
unreachable for a while): open connections are dropped and new ones refused until restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

log = logging.getLogger(__name__)


class TcpBalancer:
    def __init__(self, backends: list[tuple[str, int]], host: str = "127.0.0.1", port: int = 0) -> None:
        self.backends = backends
        self.host = host
        self.port = port
        self._next = itertools.cycle(range(len(backends)))
        self._server: asyncio.Server | None = None
        self.connections: list[int] = [0] * len(backends)
        self._open: set[asyncio.StreamWriter] = set()
        self.is_cut = False

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def restore(self) -> None:
        self.is_cut = False

    async def __aenter__(self) -> TcpBalancer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Since Python 3.12 `wait_closed` waits for every open connection, and a client's pool keeps its
        # connections open: the relay going away must drop them, as a real one would.
        if self._server is not None:
            self._server.close()
            self.cut()
            await self._server.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            i = next(self._next)
            host, port = self.backends[i]
            try:
                pair = await asyncio.open_connection(host, port)
            except OSError:
                continue
            self.connections[i] += 1
            return pair
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None if self.is_cut else await self._connect()
        if upstream is None:
            writer.transport.abort()
            return
        up_reader, up_writer = upstream
        self._open.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open.discard(writer)
        self._open.discard(up_writer)
