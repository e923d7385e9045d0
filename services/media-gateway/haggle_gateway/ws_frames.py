"""WebSocket framing (RFC 6455, section 5) for the gateway's two audio links: parsing what a peer sends and building
what we send, nothing else (no handshake, no I/O).

Why our own: each live call moves about a hundred messages a second over two sockets, and the general-purpose
stacks parse every frame through a generator state machine and hand every message over through a queue; the
gateway's cost per call was dominated by that, not by its own logic (benchmarks/README.md). This module does the
one thing both links need, in straight-line code: the common case (one whole unfragmented frame in one read) is
one header check, one unmask in C and one slice.

No extensions are negotiated on either link (no permessage-deflate), so RSV bits are always an error. Masking is
decided by role: a server reads masked frames and writes unmasked ones, a client the opposite (section 5.3).
"""

from __future__ import annotations

import random
import struct

from websockets.speedups import apply_mask  # the websockets wheel's C helper (a dependency already)

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011

_DATA_OPCODES = (OP_CONT, OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
_H16 = struct.Struct("!H")
_H64 = struct.Struct("!Q")


class FrameError(Exception):
    """The peer broke the framing rules; `code` is the close code to answer with. `messages` are those the same
    read held before the bad frame: deliver them, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.messages: list[tuple[int, bytes]] = []


class FrameReader:
    """Incremental parser of one direction of a connection.

    `feed(data)` returns the complete messages and control frames in `data` (plus what earlier reads left over)
    as `(opcode, payload)` pairs: a fragmented message comes out once, whole, under its first frame's opcode
    (TEXT or BINARY); control frames come out as they arrive, even between fragments. Payloads are unmasked.
    """

    __slots__ = ("_buf", "_masked", "_max_size", "_need", "_parts", "_parts_op", "_parts_size", "_waiting")

    def __init__(self, *, masked: bool, max_size: int) -> None:
        self._buf = b""
        # A frame that arrives over many reads is not re-joined on each: reads wait here until `_need` bytes are in.
        self._waiting: list[bytes] = []
        self._need = 0
        self._masked = masked  # frames from this peer must carry a mask (they come from a client)
        self._max_size = max_size
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._parts_op = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Raises FrameError at the first frame that breaks the rules, carrying the messages before it."""
        if not self._buf and not self._need and not self._parts_op:
            # The common case, one whole data frame in one read (a media message, an audio delta): no loop.
            size = len(data)
            if size >= 4:
                b0, b1 = data[0], data[1]
                length = b1 & 0x7F
                if length == 126 and b0 & 0xF0 == 0x80 and (b1 & 0x80 == 0x80) is self._masked:
                    length = (data[2] << 8) | data[3]
                    opcode = b0 & 0x0F
                    if opcode in (OP_TEXT, OP_BINARY) and length <= self._max_size:
                        if self._masked:
                            if size == 8 + length:
                                return [(opcode, apply_mask(data[8:], data[4:8]))]
                        elif size == 4 + length:
                            return [(opcode, data[4:])]
        out: list[tuple[int, bytes]] = []
        if self._need:
            self._waiting.append(data)
            self._need -= len(data)
            if self._need > 0:
                return out
            self._need = 0
            data, self._waiting = b"".join(self._waiting), []
        try:
            return self._feed(data, out)
        except FrameError as exc:
            exc.messages = out
            self._buf = b""
            raise

    def _feed(self, data: bytes, out: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        short = 0  # bytes the incomplete frame at the end still lacks, when its header says
        pos, end = 0, len(buf)
        masked = self._masked
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b0 & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
            if bool(b1 & 0x80) is not masked:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked" if masked
                                 else "server frames must not be masked")
            size = b1 & 0x7F
            head = pos + 2
            if size == 126:
                if end - head < 2:
                    break
                size = _H16.unpack_from(buf, head)[0]
                head += 2
            elif size == 127:
                if end - head < 8:
                    break
                size = _H64.unpack_from(buf, head)[0]
                head += 8
            opcode = b0 & 0x0F
            if size > self._max_size or (opcode < OP_CLOSE and self._parts_size + size > self._max_size):
                raise FrameError(CLOSE_TOO_BIG, f"message over {self._max_size} bytes")
            if masked:
                if end - head < 4 + size:
                    short = head + 4 + size - end
                    break
                key = buf[head:head + 4]
                head += 4
                payload = apply_mask(buf[head:head + size], key)
            else:
                if end - head < size:
                    short = head + size - end
                    break
                payload = buf[head:head + size]
            pos = head + size
            fin = b0 & 0x80
            if opcode in _CONTROL_OPCODES:
                if not fin or size > 125:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "control frames must be whole and at most 125 bytes")
                if opcode == OP_CLOSE:
                    _check_close(payload)
                out.append((opcode, payload))
            elif opcode not in _DATA_OPCODES:
                raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            elif opcode == OP_CONT:
                if not self._parts_op:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message to continue")
                self._parts.append(payload)
                self._parts_size += size
                if fin:
                    out.append((self._parts_op, b"".join(self._parts)))
                    self._parts, self._parts_size, self._parts_op = [], 0, 0
            elif self._parts_op:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "new message before the previous one was finished")
            elif fin:
                out.append((opcode, payload))
            else:
                self._parts, self._parts_size, self._parts_op = [payload], size, opcode
        self._buf = buf[pos:] if pos < end else b""
        if short > 65536:  # worth waiting for whole rather than joining again on every read
            self._waiting, self._buf, self._need = [self._buf], b"", short
        return out

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame or message held back."""
        return len(self._buf) + self._parts_size


def _header(opcode: int, size: int, mask_bit: int) -> bytes:
    if size < 126:
        return bytes((0x80 | opcode, mask_bit | size))
    if size < 65536:
        return bytes((0x80 | opcode, mask_bit | 126)) + _H16.pack(size)
    return bytes((0x80 | opcode, mask_bit | 127)) + _H64.pack(size)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One whole frame from the server side (unmasked)."""
    return _header(opcode, len(payload), 0) + payload


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One whole frame from the client side, masked. The key need not be secret here: masking exists to stop a
    script in a browser from steering bytes through a proxy (section 10.3); this client runs no one's script."""
    key = random.getrandbits(32).to_bytes(4, "big")
    return _header(opcode, len(payload), 0x80) + key + apply_mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    """The body of a close frame (no body for 1005, which must not be sent on the wire)."""
    if code == CLOSE_NO_STATUS:
        return b""
    # 125 bytes at most in a control frame; a cut must not split a character (the reason must be valid UTF-8)
    return _H16.pack(code) + reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")


def _check_close(payload: bytes) -> None:
    """A close frame's body is empty, or a code a peer may send plus a UTF-8 reason (section 7.4)."""
    if not payload:
        return
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame with a one-byte body")
    code = _H16.unpack_from(payload)[0]
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise FrameError(CLOSE_PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from exc


def parse_close(payload: bytes) -> tuple[int, str]:
    """The peer's close code and reason (1005 when it sent none)."""
    if len(payload) < 2:
        return CLOSE_NO_STATUS, ""
    return _H16.unpack_from(payload)[0], payload[2:].decode("utf-8", "replace")
