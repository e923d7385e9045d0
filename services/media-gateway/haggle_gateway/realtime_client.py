"""The WebSocket client for one Grok realtime session.

Handshake (docs/xai-realtime.md, "Handshake"): connect with `Authorization: Bearer`, wait for the first server event
(`session.created`, or `conversation.created` from older builds; `ping`s are skipped), send
`session.update`, wait for `session.updated` and check that it echoes the audio format we asked for (a
mismatch would put PCM on a mu-law line: static). Events that arrive during the handshake are kept and
handed out by `recv()` afterwards, so nothing is lost.

`?model=` goes in the query string unless the configured URL already has one. An April 2026 report says an
OpenAI-style `?model=` broke the handshake, so a refused handshake (HTTP status) is retried once on the
bare URL, and that is logged.

The socket is our own minimal WebSocket client (`ws_client`), because a live call moves about a hundred messages
a second each way: a queued server event is handed out without a suspension and a send is one synchronous write.
It pings the server every 20 s and drops the session when a pong takes longer than 20 s, so a silently dead
socket ends in RealtimeError (and a reopen) instead of a deaf call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from . import realtime_events as rt
from .settings import GatewaySettings
from .ws_client import ConnectionClosed, HandshakeError, InvalidStatus, WsClient, connect

log = logging.getLogger(__name__)

MAX_SERVER_FRAME = 4 * 1024 * 1024  # audio deltas are small; this only bounds a misbehaving server
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0


class RealtimeError(RuntimeError):
    """The realtime session could not be opened, configured, or kept."""


class RealtimeFormatError(RealtimeError):
    """`session.updated` echoed a different audio format than requested."""


def realtime_url(base: str, model: str | None, *, with_model: bool = True) -> str:
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query) if with_model or k != "model"]
    if with_model and model and not any(k == "model" for k, _ in query):
        query.append(("model", model))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


_encoder = msgspec.json.Encoder()


def _lost(exc: ConnectionClosed) -> RealtimeError:
    return RealtimeError(f"realtime connection closed: {exc}")


class RealtimeClient:
    """One connected, configured realtime session."""

    def __init__(self, ws: WsClient, url: str) -> None:
        self._ws = ws
        self.url = url
        self.session: dict[str, Any] = {}
        self.first_event: str | None = None
        self._backlog: deque[rt.ServerEvent] = deque()
        self.closed = False

    @classmethod
    async def open(cls, settings: GatewaySettings, session: dict[str, Any], *, timeout_s: float | None = None) -> \
            RealtimeClient:
        """Connect and configure; raises RealtimeError (never hangs past `timeout_s`)."""
        timeout = timeout_s or settings.realtime_connect_timeout_s
        try:
            return await asyncio.wait_for(cls._open(settings, session), timeout)
        except TimeoutError as exc:
            raise RealtimeError(f"realtime handshake did not finish within {timeout:.1f}s") from exc

    @classmethod
    async def _open(cls, settings: GatewaySettings, session: dict[str, Any]) -> RealtimeClient:
        headers = {"Authorization": f"Bearer {settings.xai_api_key}"}
        url = realtime_url(settings.xai_realtime_url, settings.realtime_model,
                           with_model=settings.realtime_model_in_query)
        try:
            ws = await cls._connect(url, headers)
        except InvalidStatus as exc:
            status = exc.status
            if status in (401, 403) or not settings.realtime_model_in_query:
                raise RealtimeError(f"realtime handshake refused: HTTP {status}") from exc
            bare = realtime_url(settings.xai_realtime_url, None, with_model=False)
            log.warning("realtime handshake with ?model= refused (HTTP %s); retrying once without it", status)
            try:
                ws = await cls._connect(bare, headers)
            except InvalidStatus as exc2:
                raise RealtimeError(f"realtime handshake refused: HTTP {exc2.status}") from exc2
            url = bare
        client = cls(ws, url)
        try:
            await client._configure(session, settings)
        except BaseException:
            await client.close()
            raise
        return client

    @staticmethod
    async def _connect(url: str, headers: dict[str, str]) -> WsClient:
        try:
            return await connect(url, headers, max_size=MAX_SERVER_FRAME, ping_interval=PING_INTERVAL_S,
                                 ping_timeout=PING_TIMEOUT_S)
        except InvalidStatus:
            raise
        except (OSError, HandshakeError) as exc:
            raise RealtimeError(f"cannot connect to the realtime API: {exc}") from exc

    async def _configure(self, session: dict[str, Any], settings: GatewaySettings) -> None:
        first = await self._next_handshake_event()
        if first.type not in ("session.created", "conversation.created"):
            raise RealtimeError(f"unexpected first realtime event {first.type!r}")
        self.first_event = first.type
        await self.send(rt.session_update(session))
        while True:
            event = await self._next_handshake_event()
            if event.type == "session.updated":
                assert isinstance(event, rt.SessionEvent)
                self.session = event.session
                break
            if event.type in ("session.created", "conversation.created"):
                continue  # servers that send both
            self._backlog.append(event)
        wanted = rt.audio_format(settings)["type"]
        for direction in ("input", "output"):
            echoed = rt.session_audio_format(self.session, direction)
            if echoed is None:
                log.warning("session.updated does not echo the %s audio format; assuming %s", direction, wanted)
            elif echoed != wanted:
                raise RealtimeFormatError(f"realtime {direction} format is {echoed!r}, wanted {wanted!r}")

    async def _next_handshake_event(self) -> rt.ServerEvent:
        while True:
            event = await self._recv_raw()
            if event.type == "ping":
                continue
            if isinstance(event, rt.ErrorEvent) and not event.benign:
                raise RealtimeError(f"realtime error during handshake: {event.error.message[:200]}")
            return event

    async def _recv_raw(self) -> rt.ServerEvent:
        ws = self._ws
        try:
            # Usually a message is already queued: taken without creating and awaiting another coroutine.
            data = ws.recv_nowait()
            if data is None:
                data = await ws.recv()
        except ConnectionClosed as exc:
            raise _lost(exc) from exc
        try:
            return rt.parse_server_event(data)
        except rt.RealtimeProtocolError as exc:
            log.warning("unparseable realtime frame: %s", exc)
            return rt.UnknownEvent(type="invalid")

    def recv(self) -> Coroutine[Any, Any, rt.ServerEvent]:
        """The next server event (handshake leftovers first). Raises RealtimeError when the socket closes.

        Hands out the receiving coroutine itself rather than one awaiting it: a coroutine level less per event."""
        if self._backlog:
            return self._from_backlog()
        return self._recv_raw()

    async def _from_backlog(self) -> rt.ServerEvent:
        return self._backlog.popleft()

    def attach(self, feed: Callable[[rt.ServerEvent], bool] | None) -> None:
        """Offer each event to `feed` inside the socket's read callback, while none is queued ahead of it (the
        handshake's leftovers included). An event it declines is parsed again when `recv` hands it out: declined
        events are the rare ones. A feed that raises is detached by the socket and its event received as usual."""
        if feed is None:
            self._ws.sink = None
            return
        backlog, parse = self._backlog, rt.parse_server_event

        def sink(data: bytes) -> bool:
            if backlog:
                return False
            try:
                event = parse(data)
            except rt.RealtimeProtocolError:
                return False  # `recv` logs it
            return feed(event)

        self._ws.sink = sink

    @property
    def writable_now(self) -> bool:
        """`send_now` may run: the socket is open and its buffer under the high-water mark."""
        ws = self._ws
        return not ws.write_paused and not ws.closed

    def send_now(self, event: dict[str, Any]) -> None:
        """`send` without waiting on the socket's buffer (the caller checked `writable_now`)."""
        try:
            # Already UTF-8 JSON: sent as a text frame without a round trip through str (one per caller frame).
            self._ws.send_text(_encoder.encode(event))
        except ConnectionClosed as exc:
            raise _lost(exc) from exc

    async def send(self, event: dict[str, Any]) -> None:
        self.send_now(event)
        if self._ws.write_paused:  # the socket buffer is full: wait for it here rather than grow it without bound
            try:
                await self._ws.drain()
            except ConnectionClosed as exc:
                raise _lost(exc) from exc

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._ws.close(timeout_s=2.0)  # bounded: aborts the socket if the server does not answer
        except OSError:
            pass
