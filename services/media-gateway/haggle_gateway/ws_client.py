"""A minimal WebSocket client (RFC 6455) on `asyncio.Protocol`, for the gateway's link to the realtime model.

Why not the `websockets` library: a live call exchanges about a hundred messages a second with the model, and
that library's per-message machinery (a generator parser, a queue-based assembler, a lock and a drain per send)
was a large share of the gateway's CPU. Here a received message costs one `FrameReader.feed`, one deque append
and at most one future wake-up; `recv_nowait()` hands a queued message out without suspending; a send is one
`transport.write`, and `drain()` only waits while the transport has asked us to stop writing.

Scope is what that link needs, nothing more: no extensions are offered (so nothing is compressed and the RSV bits
must be clear), no subprotocols, no proxies, no redirects. Text messages come out as their raw UTF-8 bytes
(msgspec decodes bytes; no `str` is made per message and UTF-8 is not validated here).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import ssl as ssl_module
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

from .ws_frames import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameReader,
    client_frame,
    close_payload,
    parse_close,
)

log = logging.getLogger(__name__)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_RESPONSE_HEAD = 16 * 1024  # a 101 response is a few hundred bytes; this bounds a server that never ends it
QUEUE_HIGH = 256  # messages held before we stop reading the socket (TCP then pushes back on the server)
QUEUE_LOW = QUEUE_HIGH // 2  # hysteresis: the transport is paused and resumed per burst, not per message
CLOSE_TIMEOUT_S = 2.0

# CLOSING: we sent a close frame and still read, for the server's answer. CLOSED: nothing more is read (a close
# frame came in, the peer broke the protocol, or the socket ended), though the socket may take a moment to end.
_CONNECTING, _OPEN, _CLOSING, _CLOSED = range(4)


class WsError(Exception):
    """Base of this module's errors."""


class HandshakeError(WsError):
    """The server did not complete a WebSocket upgrade (bad URL, bad or truncated response, lost connection)."""


class InvalidStatus(HandshakeError):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"server rejected WebSocket connection: HTTP {status}" + (f" {reason}" if reason else ""))
        self.status = status


class ConnectionClosed(WsError):
    """The connection is closed (or closing, for a send); `code` and `reason` say how it ended."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}".rstrip())
        self.code = code
        self.reason = reason


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


async def connect(url: str, headers: dict[str, str], *, max_size: int, ping_interval: float | None,
                  ping_timeout: float | None, ssl: ssl_module.SSLContext | None = None) -> WsClient:
    """Open a connection and complete the upgrade. Raises OSError, HandshakeError or InvalidStatus.

    No timeout of its own: the caller bounds the whole open (on cancellation the socket is closed here).
    `ssl` overrides the default context for wss:// (tests with their own CA)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise HandshakeError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    host = parts.hostname
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError as exc:
        raise HandshakeError(f"bad port in {url!r}") from exc
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != (443 if secure else 80):
        host_header += f":{parts.port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16))
    lines = [f"GET {target} HTTP/1.1", f"Host: {host_header}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key.decode('ascii')}", "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    loop = asyncio.get_running_loop()
    client = WsClient(loop, accept_key(key), max_size=max_size, ping_interval=ping_interval,
                      ping_timeout=ping_timeout)
    if secure:
        await loop.create_connection(lambda: client, host, port, ssl=ssl or ssl_module.create_default_context(),
                                     server_hostname=host)
    else:
        await loop.create_connection(lambda: client, host, port)
    try:
        client._transport.write(request)  # type: ignore[union-attr]
        await client._handshake
    except BaseException:
        client.abort()
        raise
    return client


class WsClient(asyncio.Protocol):
    """One client connection. A single reader at a time (`recv`); sends are synchronous writes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, accept: bytes, *, max_size: int,
                 ping_interval: float | None, ping_timeout: float | None) -> None:
        self._loop = loop
        self._accept = accept
        self._state = _CONNECTING
        self._transport: asyncio.Transport | None = None
        self._head = b""
        self._handshake: asyncio.Future[None] = loop.create_future()
        self._reader = FrameReader(masked=False, max_size=max_size)
        self._queue: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._close_sent = False
        self._close_code = CLOSE_ABNORMAL
        self._close_reason = ""
        self._lost: asyncio.Future[None] = loop.create_future()
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._ping_payload: bytes | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        # The reader's synchronous form: offered each message while none is queued ahead of it; True means it was
        # handled inside this read callback and is not queued for `recv`.
        self.sink: Callable[[bytes], bool] | None = None

    # --- public API ---------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once a close frame was sent or received, or the socket ended: sends raise from then on."""
        return self._state >= _CLOSING

    @property
    def close_code(self) -> int:
        return self._close_code

    @property
    def write_paused(self) -> bool:
        """The transport's buffer is over its high-water mark: await `drain()` before writing more."""
        return self._write_paused

    def recv_nowait(self) -> bytes | None:
        """The next queued message, None if none is queued yet. Raises ConnectionClosed once closed and drained."""
        queue = self._queue
        if queue:
            data = queue.popleft()
            if self._reading_paused and len(queue) < QUEUE_LOW:
                self._resume_reading()
            return data
        if self._state == _CLOSED:
            raise ConnectionClosed(self._close_code, self._close_reason)
        return None

    async def recv(self) -> bytes:
        """The next message's payload (a text message as its UTF-8 bytes). Raises ConnectionClosed once the
        connection has closed and every message received before that has been handed out."""
        while True:
            data = self.recv_nowait()
            if data is not None:
                return data
            if self._waiter is not None:
                raise RuntimeError("recv() is already waiting for a message")
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def send_text(self, data: bytes) -> None:
        """Send `data` (UTF-8 already) as one text frame. Raises ConnectionClosed once the connection is closing."""
        if self._state != _OPEN:
            raise ConnectionClosed(self._close_code, self._close_reason or "connection is closing")
        self._transport.write(client_frame(OP_TEXT, data))  # type: ignore[union-attr]

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark (returns at once otherwise)."""
        if self._write_paused:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self._loop.create_future()
            await asyncio.shield(waiter)  # several writers may wait on the same future
        if self._state == _CLOSED:
            raise ConnectionClosed(self._close_code, self._close_reason)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "", *, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Send a close frame once, wait up to `timeout_s` for the server's close (or the socket's end), then
        close the socket (abort it if it still has not ended)."""
        if self._transport is None or self._lost.done():
            return
        if self._state == _OPEN:
            self._start_close(code, reason)
        abort = self._loop.call_later(timeout_s, self.abort)  # fires even if this coroutine is cancelled
        try:
            await asyncio.shield(self._lost)
        finally:
            if self._lost.done():
                abort.cancel()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- asyncio.Protocol ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state != _OPEN and state != _CLOSING:
            if state == _CONNECTING:
                self._handshake_data(data)
            return
        try:
            frames = self._reader.feed(data)
        except FrameError as exc:
            self._deliver(exc.messages)
            self._fail(exc.code, exc.reason)
            return
        self._deliver(frames)

    def _deliver(self, frames: list[tuple[int, bytes]]) -> None:
        queue = self._queue
        for opcode, payload in frames:
            if opcode == OP_TEXT or opcode == OP_BINARY:
                sink = self.sink
                if sink is not None and not queue:
                    try:
                        if sink(payload):
                            continue
                    except Exception:
                        # A bug in the reader: detach it; this message and the rest go to `recv`, where the
                        # failure surfaces in the task that handles them.
                        log.exception("WebSocket reader failed; messages go through recv()")
                        self.sink = None
                queue.append(payload)
            elif opcode == OP_PING:
                self._transport.write(client_frame(OP_PONG, payload))  # type: ignore[union-attr]
            elif opcode == OP_PONG:
                if payload == self._ping_payload:
                    self._on_pong()
            elif opcode == OP_CLOSE:
                self._on_close_frame(payload)
                break
        if queue:
            self._wake()
            if not self._reading_paused and len(queue) > QUEUE_HIGH and self._state != _CLOSED:
                self._reading_paused = True
                self._transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        return None  # close the transport: a WebSocket does not live on half a TCP connection

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state != _CLOSED:  # the socket ended without a close frame from the server
            self._close_code = CLOSE_ABNORMAL
            self._close_reason = f"connection lost: {exc}" if exc else "connection lost"
        self._state = _CLOSED
        self._cancel_timers()
        if not self._handshake.done():
            self._handshake.set_exception(HandshakeError(
                "connection closed during the WebSocket handshake" + (f": {exc}" if exc else "")))
            self._handshake.exception()  # retrieved: connect() may already have been cancelled
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- internals ----------------------------------------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_RESPONSE_HEAD:
                self._handshake_failed(HandshakeError(f"HTTP response head over {MAX_RESPONSE_HEAD} bytes"))
            else:
                self._head = head
            return
        self._head = b""
        try:
            self._check_response(head[:end])
        except HandshakeError as exc:
            self._handshake_failed(exc)
            return
        self._state = _OPEN
        self._handshake.set_result(None)
        if self._ping_interval:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._send_ping)
        rest = head[end + 4:]
        if rest:  # frames that came in the same read as the response head
            self.data_received(rest)

    def _check_response(self, head: bytes) -> None:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes any bytes
            raise HandshakeError("undecodable HTTP response") from exc
        status_line, *header_lines = text.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise HandshakeError(f"malformed HTTP status line {status_line[:100]!r}")
        status = int(code)
        if status != 101:
            raise InvalidStatus(status, reason.strip())
        fields: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise HandshakeError(f"malformed HTTP header line {line[:100]!r}")
            name = name.strip().lower()
            fields[name] = f"{fields[name]}, {value.strip()}" if name in fields else value.strip()
        if fields.get("upgrade", "").lower() != "websocket":
            raise HandshakeError(f"bad Upgrade header {fields.get('upgrade')!r}")
        if "upgrade" not in (token.strip().lower() for token in fields.get("connection", "").split(",")):
            raise HandshakeError(f"bad Connection header {fields.get('connection')!r}")
        if fields.get("sec-websocket-accept", "").encode("latin-1") != self._accept:
            raise HandshakeError("bad Sec-WebSocket-Accept header")
        if fields.get("sec-websocket-extensions"):
            raise HandshakeError("the server chose an extension, and none was offered")
        if fields.get("sec-websocket-protocol"):
            raise HandshakeError("the server chose a subprotocol, and none was offered")

    def _handshake_failed(self, exc: HandshakeError) -> None:
        self._state = _CLOSED
        if not self._handshake.done():
            self._handshake.set_exception(exc)
            self._handshake.exception()  # retrieved: connect() may already have been cancelled
        self._transport.close()  # type: ignore[union-attr]

    def _start_close(self, code: int, reason: str) -> None:
        """Send our close frame once and stop accepting sends."""
        self._state = _CLOSING
        if not self._close_sent:
            self._close_sent = True
            self._close_code, self._close_reason = code, reason or "closed by us"
            self._transport.write(client_frame(OP_CLOSE, close_payload(code, reason)))  # type: ignore[union-attr]

    def _on_close_frame(self, payload: bytes) -> None:
        code, reason = parse_close(payload)
        if not self._close_sent:
            self._close_sent = True
            # Echo the code; 1005 means the server sent none, and then our close frame has no body either.
            self._transport.write(client_frame(OP_CLOSE, close_payload(code)))  # type: ignore[union-attr]
        self._state = _CLOSED
        self._close_code, self._close_reason = code, reason or "closed by the server"
        self._cancel_timers()
        self._transport.close()  # type: ignore[union-attr]
        self._wake()

    def _fail(self, code: int, reason: str) -> None:
        """A protocol error or a dead peer: send our close frame (if not sent yet) and drop the connection."""
        if self._state == _CLOSED:
            return
        if not self._close_sent:
            self._close_sent = True
            self._transport.write(client_frame(OP_CLOSE, close_payload(code, reason)))  # type: ignore[union-attr]
        self._state = _CLOSED
        self._close_code, self._close_reason = code, reason
        self._cancel_timers()
        self._transport.close()  # type: ignore[union-attr]
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self._state != _CLOSED:
            self._transport.resume_reading()  # type: ignore[union-attr]

    def _send_ping(self) -> None:
        self._ping_timer = None
        if self._state != _OPEN:
            return
        self._ping_payload = os.urandom(4)
        self._transport.write(client_frame(OP_PING, self._ping_payload))  # type: ignore[union-attr]
        if self._ping_timeout:
            self._pong_timer = self._loop.call_later(self._ping_timeout, self._ping_timed_out)

    def _on_pong(self) -> None:
        self._ping_payload = None
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
        if self._ping_interval and self._state == _OPEN:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._send_ping)

    def _ping_timed_out(self) -> None:
        self._pong_timer = None
        if self._reading_paused and self._state == _OPEN:
            # We are not reading, so the pong may be sitting unread in the socket: that says nothing about the
            # server. Judge again once another timeout has passed.
            self._pong_timer = self._loop.call_later(self._ping_timeout or 0, self._ping_timed_out)
            return
        self._fail(CLOSE_INTERNAL, "keepalive ping timeout")
        self.abort()  # the peer is not answering: do not wait for its TCP buffer to take our close frame

    def _cancel_timers(self) -> None:
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = None

