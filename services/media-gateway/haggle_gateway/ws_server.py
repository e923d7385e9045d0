"""The server side of the process's WebSockets (Twilio's media streams): uvicorn's sans-I/O protocol for the
handshake, our own framing once the connection is open.

Why: uvicorn's protocol parses every frame through websockets' generator parser, queues every message on an
`asyncio.Queue`, and pauses and resumes reading around each one (two event-loop registrations per frame); a call
receives ~60 frames a second, and that was a large share of the gateway's CPU (benchmarks/README.md). This
subclass keeps everything uvicorn does until the app accepts (request parsing, the 101, rejections, the HTTP
denial response, keepalive pings) and from then on:

- parses frames with `ws_frames.FrameReader` (masked, `ws_max_size` bounded; a violation closes with its code);
- queues messages on a deque with one waiter, and pauses reading only when the app falls `_HIGH_WATER` messages
  behind (resumed once it is back under `_LOW_WATER`);
- answers pings and the peer's close itself, as uvicorn does;
- offers the app a direct path past the ASGI message dicts: the protocol is in the scope under
  `extensions["haggle.ws"]`, and `app.StarletteLink` uses its `receive`/`send_data` when it is there, and may
  set `sink`, a synchronous reader that handles a text message inside this read callback (the gateway's media
  frames) instead of waking the task that awaits `receive`.

ASGI `receive`/`send` keep working for everything else (accept, close, Starlette's own handling).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from . import ws_frames as wf

SCOPE_KEY = "haggle.ws"
log = logging.getLogger(__name__)
_HIGH_WATER = 256  # messages queued for the app before the socket stops being read
_LOW_WATER = 64


class _Inbox:
    """What the app has yet to receive: ASGI messages, in order, with at most one waiting reader. Replaces uvicorn's
    `asyncio.Queue` (`put_nowait` is what the parent class calls; `receive` below reads it)."""

    __slots__ = ("_loop", "_waiter", "items")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: deque[dict[str, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop = loop

    def put_nowait(self, item: dict[str, Any]) -> None:
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> dict[str, Any]:
        items = self.items
        while not items:
            waiter = self._waiter = self._loop.create_future()
            await waiter
        return items.popleft()


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `ws=` protocol class for `haggle up` and `haggle run media-gateway`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox(self.loop)  # type: ignore[assignment]
        self._reader: wf.FrameReader | None = None  # set once the app has accepted
        # The app's synchronous reader: offered each text message while nothing is queued ahead of it; True means
        # it was handled there and is not queued (see app.StarletteLink.attach).
        self.sink: Callable[[str], bool] | None = None

    @property
    def accepted_open(self) -> bool:
        """Accepted (frames are ours to parse) and open both ways."""
        return self._reader is not None and not self.close_sent and not self.disconnected

    @property
    def can_write(self) -> bool:
        """`accepted_open`, and the transport's buffer under its high-water mark: a write goes out at once."""
        return self.accepted_open and self.writable.is_set()

    # -- handshake: uvicorn's, plus the scope key --------------------------------------------------------------

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][SCOPE_KEY] = self

    async def send(self, message: Any) -> None:
        if self._reader is not None and message["type"] == "websocket.send" and not self.close_sent:
            text = message.get("text")
            await self.send_data(text.encode() if text is not None else message.get("bytes") or b"",
                                 text is not None)
            return
        await super().send(message)
        if (self._reader is None and self.handshake_complete and self.initial_response is None
                and not self.close_sent and not self.disconnected and not self.conn.extensions):
            # Accepted: from here on the frames are ours to parse. A conforming client sends none before the 101,
            # so websockets' parser holds nothing yet. (A connection that negotiated compression stays on
            # uvicorn's path: `uvicorn_options` offers none.)
            self._reader = wf.FrameReader(masked=True, max_size=self.config.ws_max_size)

    # -- frames in ----------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            super().data_received(data)
            return
        try:
            frames = reader.feed(data)
        except wf.FrameError as exc:
            if self._deliver(exc.messages):
                self._fail(exc.code, exc.reason)
            return
        if self._deliver(frames) and not self.read_paused and len(self.queue.items) > _HIGH_WATER:
            self.read_paused = True
            self.transport.pause_reading()

    def _deliver(self, frames: list[tuple[int, bytes]]) -> bool:
        """Hand messages to the app and answer control frames; False once the connection is closing."""
        inbox = self.queue
        for opcode, payload in frames:
            if opcode == wf.OP_TEXT:
                if self.close_sent:
                    continue  # past the app's close: read on only for the peer's close reply
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    self._fail(wf.CLOSE_INVALID_DATA, "text frame is not UTF-8")
                    return False
                sink = self.sink
                if sink is not None and not inbox.items:
                    try:
                        if sink(text):
                            continue
                    except Exception:
                        # A bug in the reader: detach it; the frame (and the rest) go to `receive`, where the
                        # failure surfaces in the task that handles it.
                        log.exception("WebSocket reader failed; frames go through receive()")
                        self.sink = None
                inbox.put_nowait({"type": "websocket.receive", "text": text})
            elif opcode == wf.OP_BINARY:
                if not self.close_sent:
                    inbox.put_nowait({"type": "websocket.receive", "bytes": payload})
            elif opcode == wf.OP_PING:
                if not self.close_sent:
                    self.transport.write(wf.server_frame(wf.OP_PONG, payload))
            elif opcode == wf.OP_PONG:
                self.handle_pong(WsFrame(Opcode.PONG, payload))
            else:  # OP_CLOSE
                self._peer_closed(payload)
                return False
        return True

    def _peer_closed(self, payload: bytes) -> None:
        if self.close_sent:  # the reply to our close: the closing handshake is complete
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
            self.transport.close()
            return
        code, reason = wf.parse_close(payload)
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if not self.transport.is_closing():
            reply = wf.CLOSE_NORMAL if code in (wf.CLOSE_NO_STATUS, wf.CLOSE_ABNORMAL) else code
            self.transport.write(wf.server_frame(wf.OP_CLOSE, wf.close_payload(reply)))
            self.close_sent = True
            self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if not self.transport.is_closing():
            self.transport.write(wf.server_frame(wf.OP_CLOSE, wf.close_payload(code, reason)))
        self.close_sent = True
        self.transport.close()

    # -- the app's direct path ----------------------------------------------------------------------------------

    async def receive(self) -> Any:
        items = self.queue.items
        # A queued message is taken without creating the waiting coroutine.
        message = items.popleft() if items else await self.queue.get()
        if self.read_paused and len(items) < _LOW_WATER:
            self.read_paused = False
            self.transport.resume_reading()
        return message

    async def send_data(self, data: bytes, text: bool = True) -> None:
        """One message to the peer, written at once; waits only while the transport's buffer is over its mark."""
        if self.disconnected or self.close_sent:
            raise ClientDisconnected()
        self.transport.write(wf.server_frame(wf.OP_TEXT if text else wf.OP_BINARY, data))
        if not self.writable.is_set():
            await self.writable.wait()

    def write_texts(self, texts: tuple[str, ...]) -> None:
        """Text messages to the peer in one write (a media message and its mark: one syscall, not two), at once
        whatever the transport holds (the caller bounds that)."""
        if len(texts) == 1:
            self.transport.write(wf.server_frame(wf.OP_TEXT, texts[0].encode()))
        else:
            self.transport.write(b"".join([wf.server_frame(wf.OP_TEXT, text.encode()) for text in texts]))
