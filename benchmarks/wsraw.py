"""A minimal RFC 6455 WebSocket endpoint on `asyncio.Protocol`, for the load generator only.

Why not the `websockets` library here: the load generator shares the two cores with the process it measures,
so every microsecond it spends per frame is taken from the system under test and inflates its latency. This
endpoint sends a frame with one `transport.write` (client frames use an all-zero mask key, which is legal on
the wire: the peer XORs with zeros) and parses frames straight out of a receive buffer. It does exactly what
the benchmark needs: text frames (fragmented ones are reassembled), ping -> pong, close -> close. No
extensions are offered or accepted, so nothing is compressed (Twilio does not compress media frames either).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import struct

from websockets.speedups import apply_mask

log = logging.getLogger(__name__)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_ZERO_MASK = b"\x00\x00\x00\x00"
MAX_HEADER_BYTES = 16384


class HandshakeError(RuntimeError):
    """The peer did not complete a WebSocket upgrade."""


def accept_key(key: bytes) -> str:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode("ascii")


def encode_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    n = len(payload)
    first = 0x80 | opcode
    mask_bit = 0x80 if mask else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if mask:
        return header + _ZERO_MASK + payload
    return header + payload


class WsEndpoint(asyncio.Protocol):
    """One WebSocket connection. Subclasses implement `on_text`, and optionally `on_open` / `on_closed`.

    `client=True`: `connect()` performs the upgrade request; `client=False`: the first bytes received are
    parsed as the upgrade request and `accept(path, headers)` decides.
    """

    def __init__(self, *, client: bool, path: str = "/", host: str = "127.0.0.1",
                 headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.path = path
        self.host = host
        self.request_headers: dict[str, str] = {}
        self._extra_headers = headers or {}
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._open = False
        self._closed = False
        self._fragments: list[bytes] = []
        self._key = base64.b64encode(os.urandom(16))
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    # ------------------------------------------------------------------------------------ hooks for subclasses

    def on_open(self) -> None:
        return None

    def on_text(self, payload: bytes) -> None:
        raise NotImplementedError

    def on_closed(self) -> None:
        return None

    def accept(self, path: str, headers: dict[str, str]) -> bool:
        return True

    # ------------------------------------------------------------------------------------ sending

    @property
    def is_open(self) -> bool:
        return self._open and not self._closed

    def send_text(self, text: str | bytes) -> None:
        if not self._open or self._closed or self.transport is None:
            return
        data = text.encode() if isinstance(text, str) else text
        self.transport.write(encode_frame(OP_TEXT, data, mask=self.client))

    def close(self, code: int = 1000) -> None:
        if self.transport is None or self._closed:
            return
        if self._open:
            self.transport.write(encode_frame(OP_CLOSE, struct.pack("!H", code), mask=self.client))
        self._mark_closed()
        self.transport.close()

    # ------------------------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        if self.client:
            lines = [
                f"GET {self.path} HTTP/1.1",
                f"Host: {self.host}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {self._key.decode()}",
                "Sec-WebSocket-Version: 13",
                *(f"{k}: {v}" for k, v in self._extra_headers.items()),
            ]
            transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(f"connection lost before the upgrade: {exc}"))
        self._mark_closed()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._open:
            if not self._handshake():
                return
        self._parse()

    # ------------------------------------------------------------------------------------ internals

    def _mark_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_closed()

    def _handshake(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEADER_BYTES:
                self._fail("upgrade headers too large")
            return False
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        first, *rest = head.split("\r\n")
        headers: dict[str, str] = {}
        for line in rest:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.request_headers = headers
        assert self.transport is not None
        if self.client:
            parts = first.split(" ", 2)
            if len(parts) < 2 or parts[1] != "101":
                self._fail(f"upgrade refused: {first[:80]!r}")
                return False
            if headers.get("sec-websocket-accept") != accept_key(self._key):
                self._fail("bad Sec-WebSocket-Accept")
                return False
        else:
            method, _, rest_line = first.partition(" ")
            path = rest_line.rsplit(" ", 1)[0]
            key = headers.get("sec-websocket-key")
            if method != "GET" or not key or not self.accept(path, headers):
                self.transport.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()
                self._fail("upgrade rejected")
                return False
            self.path = path
            self.transport.write(
                ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Accept: {accept_key(key.encode())}\r\n\r\n").encode())
        self._open = True
        if not self.opened.done():
            self.opened.set_result(None)
        self.on_open()
        return True

    def _fail(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(reason))
        if self.transport is not None:
            self.transport.close()
        self._mark_closed()

    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            masked = b1 & 0x80
            if masked:
                head += 4
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            if masked:
                key = bytes(buf[pos + head - 4 : pos + head])
                if key != _ZERO_MASK:
                    payload = apply_mask(payload, key)
            pos += head + n
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
            if self._closed:
                break
        del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if not fin:
                self._fragments.append(payload)
                return
            if self._fragments:
                payload = b"".join([*self._fragments, payload])
                self._fragments.clear()
            self.on_text(payload)
        elif opcode == OP_PING:
            if self.transport is not None and not self._closed:
                self.transport.write(encode_frame(OP_PONG, payload, mask=self.client))
        elif opcode == OP_CLOSE:
            if self.transport is not None and not self._closed:
                self.transport.write(encode_frame(OP_CLOSE, payload[:2], mask=self.client))
                self._mark_closed()
                self.transport.close()
