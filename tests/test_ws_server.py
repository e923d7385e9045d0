"""The server side of the media stream's WebSocket (haggle_gateway/ws_server.py), served by a real uvicorn on
loopback with the options `haggle up` uses, and spoken to by the `websockets` client or raw bytes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn
import websockets
from haggle_gateway import ws_frames as wf
from haggle_gateway.app import StarletteLink
from haggle_gateway.ws_server import _HIGH_WATER, SCOPE_KEY, LeanWebSocketProtocol
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from haggle.system import uvicorn_options

WAIT_S = 10.0

Handler = Callable[[WebSocket, StarletteLink, LeanWebSocketProtocol], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(handler: Handler, protocol: type[LeanWebSocketProtocol] = LeanWebSocketProtocol) -> \
        AsyncIterator[str]:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        lean = websocket.scope["extensions"][SCOPE_KEY]
        await handler(websocket, StarletteLink(websocket), lean)

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **{**uvicorn_options(), "ws": protocol}))
    task = asyncio.create_task(server.serve())

    async def started() -> None:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)  # uvicorn exposes no start event to await

    await asyncio.wait_for(started(), WAIT_S)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_S)


async def echo(_: WebSocket, link: StarletteLink, __: LeanWebSocketProtocol) -> None:
    while True:
        frame = await link.receive()
        if frame.closed:
            return
        await link.send(frame.text or "")


async def test_text_both_ways_on_the_lean_path_with_compression_refused() -> None:
    async with serve(echo) as url, websockets.connect(url, proxy=None) as ws:  # offers permessage-deflate
        assert ws.protocol.extensions == []  # refused: the lean path reads uncompressed frames only
        for size in (5, 300, 30000):  # 60000 bytes: under ws_max_size
            await ws.send("é" * size)
            assert await asyncio.wait_for(ws.recv(), WAIT_S) == "é" * size


async def test_the_app_sees_the_peers_close_code_and_the_peer_gets_the_reply() -> None:
    seen: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()

    async def watch(_: WebSocket, link: StarletteLink, lean: LeanWebSocketProtocol) -> None:
        frame = await link.receive()
        seen.set_result((frame.closed, lean.queue.items))

    async with serve(watch) as url:
        ws = await websockets.connect(url, proxy=None, compression=None)
        await ws.close(4000, "bye")
        closed, _ = await asyncio.wait_for(seen, WAIT_S)
        assert closed and ws.close_code == 4000  # our close reply echoed the peer's code


async def test_a_ping_is_answered() -> None:
    async with serve(echo) as url, websockets.connect(url, proxy=None, compression=None) as ws:
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, WAIT_S)


@pytest.mark.parametrize(("raw", "code"), [
    (wf.server_frame(wf.OP_TEXT, b"unmasked"), wf.CLOSE_PROTOCOL_ERROR),
    (wf.client_frame(wf.OP_TEXT, b"x" * 70000), wf.CLOSE_TOO_BIG),
    (wf.client_frame(wf.OP_TEXT, b"\xff\xfe"), wf.CLOSE_INVALID_DATA),
], ids=["unmasked", "too-big", "not-utf8"])
async def test_a_broken_frame_closes_with_its_code_after_the_messages_before_it(raw: bytes, code: int) -> None:
    got: list[str] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def collect(_: WebSocket, link: StarletteLink, __: LeanWebSocketProtocol) -> None:
        while not (frame := await link.receive()).closed:
            got.append(frame.text or "")
        done.set_result(None)

    async with serve(collect) as url:
        reader, writer = await raw_connect(url)
        writer.write(wf.client_frame(wf.OP_TEXT, b"before") + raw)
        opcode, payload = await asyncio.wait_for(next_server_frame(reader), WAIT_S)
        assert opcode == wf.OP_CLOSE and wf.parse_close(payload)[0] == code
        await asyncio.wait_for(done, WAIT_S)
        assert got == ["before"]
        writer.close()


async def test_a_slow_app_pauses_reading_and_loses_nothing() -> None:
    paused = asyncio.Event()

    class Watched(LeanWebSocketProtocol):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.read_paused:
                paused.set()

    states: list[bool] = []
    got: list[str] = []
    count = _HIGH_WATER * 3

    async def slow(_: WebSocket, link: StarletteLink, lean: LeanWebSocketProtocol) -> None:
        await asyncio.wait_for(paused.wait(), WAIT_S)  # the app reads nothing until the socket is paused
        states.append(len(lean.queue.items) > _HIGH_WATER)
        while len(got) < count:
            got.append((await link.receive()).text or "")
        states.append(lean.read_paused)
        await link.send("done")

    async with serve(slow, Watched) as url, websockets.connect(url, proxy=None, compression=None) as ws:
        for i in range(count):
            await ws.send(str(i))
        assert await asyncio.wait_for(ws.recv(), WAIT_S) == "done"
    assert states == [True, False]
    assert got == [str(i) for i in range(count)]


async def test_the_sink_takes_frames_in_order_and_declines_to_the_receiver() -> None:
    """An attached reader handles frames inside the read callback while nothing is queued ahead of them; what it
    declines, and what arrives while that waits, goes to `receive` in order. A reader that raises is detached and
    its frame received as usual."""
    sunk: list[str] = []
    received: list[str] = []

    def feed(text: str) -> bool:
        if text == "boom":
            raise RuntimeError("reader bug")
        if text.startswith("sink"):
            sunk.append(text)
            return True
        return False

    async def attached(_: WebSocket, link: StarletteLink, lean: LeanWebSocketProtocol) -> None:
        link.attach(feed)
        await link.send("attached")
        while (text := (await link.receive()).text) != "end":
            received.append(text or "")
            await link.send(f"got {text}")
        await link.send("sink" if lean.sink is None else "still attached")

    async with serve(attached) as url, websockets.connect(url, proxy=None, compression=None) as ws:
        assert await asyncio.wait_for(ws.recv(), WAIT_S) == "attached"
        await ws.send("sink-1")
        await ws.send("keep-1")
        assert await asyncio.wait_for(ws.recv(), WAIT_S) == "got keep-1"
        await ws.send("keep-2")
        await ws.send("sink-2")  # behind keep-2 while the app has not taken it: queued too
        assert [await asyncio.wait_for(ws.recv(), WAIT_S) for _ in range(2)] == ["got keep-2", "got sink-2"]
        await ws.send("boom")
        assert await asyncio.wait_for(ws.recv(), WAIT_S) == "got boom"
        await ws.send("sink-3")  # detached: received
        assert await asyncio.wait_for(ws.recv(), WAIT_S) == "got sink-3"
        await ws.send("end")
        assert await asyncio.wait_for(ws.recv(), WAIT_S) == "sink"
    assert sunk == ["sink-1"]
    assert received == ["keep-1", "keep-2", "sink-2", "boom", "sink-3"]


async def test_send_now_writes_at_once() -> None:
    async def push(_: WebSocket, link: StarletteLink, __: LeanWebSocketProtocol) -> None:
        assert link.writable_now
        for i in range(3):
            link.send_now(f"now-{i}")
        await link.receive()

    async with serve(push) as url, websockets.connect(url, proxy=None, compression=None) as ws:
        assert [await asyncio.wait_for(ws.recv(), WAIT_S) for _ in range(3)] == ["now-0", "now-1", "now-2"]


# -- raw client ------------------------------------------------------------------------------------------------


async def raw_connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def next_server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    frames = wf.FrameReader(masked=False, max_size=1 << 20)
    while True:
        data = await reader.read(65536)
        assert data, "server closed without a close frame"
        got = frames.feed(data)
        if got:
            return got[0]
