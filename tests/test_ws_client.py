"""The gateway's own WebSocket client (`ws_client`) and `RealtimeClient` on it, over real loopback sockets.

Well-behaved servers are the `websockets` library's; servers that break the protocol, or must do something at a
byte-exact moment (frames in the same write as the 101 response, never answering a ping), are raw asyncio ones.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from haggle_gateway import realtime_events as rt
from haggle_gateway import ws_client
from haggle_gateway.realtime_client import RealtimeClient, RealtimeError
from haggle_gateway.settings import GatewaySettings
from haggle_gateway.ws_frames import (
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    parse_close,
    server_frame,
)
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WAIT_S = 5.0


async def connect(url: str, headers: dict[str, str] | None = None, **kw: Any) -> ws_client.WsClient:
    opts: dict[str, Any] = {"max_size": 1 << 20, "ping_interval": None, "ping_timeout": None} | kw
    return await asyncio.wait_for(ws_client.connect(url, headers or {}, **opts), WAIT_S)


@contextlib.asynccontextmanager
async def ws_server(handler: Callable[[ServerConnection], Awaitable[None]], **kw: Any) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, compression=None, **kw) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/path?x=1"


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: RawHandler) -> AsyncIterator[str]:
    """A raw TCP server: `handler(reader, writer, key)` runs once the request head is read (no response sent)."""
    tasks: set[asyncio.Task[None]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            await handler(reader, writer, key)
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        for task in tasks:
            task.cancel()
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT_S)


def accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def upgrade_response(key: bytes) -> bytes:
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept(key) + b"\r\n\r\n")


async def client_frames(reader: asyncio.StreamReader) -> AsyncIterator[tuple[int, bytes]]:
    """The frames a client sends (unmasked), until it closes the socket."""
    frames = FrameReader(masked=True, max_size=1 << 20)
    while data := await reader.read(65536):
        for frame in frames.feed(data):
            yield frame


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


# --- handshake ----------------------------------------------------------------------------------------------------

async def test_handshake_sends_headers_and_messages_flow_both_ways() -> None:
    seen: list[Request] = []

    def process_request(_: ServerConnection, request: Request) -> None:
        seen.append(request)

    async with ws_server(echo, process_request=process_request) as url:
        client = await connect(url, {"Authorization": "Bearer k1"})
        client.send_text('{"a": "é"}'.encode())
        assert await asyncio.wait_for(client.recv(), WAIT_S) == '{"a": "é"}'.encode()
        assert client.recv_nowait() is None and not client.closed
        await asyncio.wait_for(client.close(), WAIT_S)
        assert client.closed and client.close_code == 1000
    request = seen[0]
    assert request.path == "/path?x=1"
    assert request.headers["Authorization"] == "Bearer k1"
    assert request.headers["Host"] == url.split("/")[2]
    assert "Sec-WebSocket-Extensions" not in request.headers  # nothing offered: no compression


async def test_a_wrong_accept_header_is_rejected() -> None:
    async def wrong_accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
        writer.write(upgrade_response(key + b"x"))
        await writer.drain()
        await asyncio.Event().wait()

    async with raw_server(wrong_accept) as url:
        with pytest.raises(ws_client.HandshakeError, match="Accept") as info:
            await connect(url)
        assert not isinstance(info.value, ws_client.InvalidStatus)


@pytest.mark.parametrize("status", [400, 403, 500])
async def test_a_refused_upgrade_surfaces_its_status(status: int) -> None:
    def refuse(_: ServerConnection, __: Request) -> Response:
        return Response(status, "No", Headers({"Content-Length": "4"}), b"nope")

    async with ws_server(echo, process_request=refuse) as url:
        with pytest.raises(ws_client.InvalidStatus) as info:
            await connect(url)
    assert info.value.status == status


async def test_a_truncated_response_and_a_huge_head_are_handshake_errors() -> None:
    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: bytes) -> None:
        writer.write(b"HTTP/1.1 101 Switching")
        await writer.drain()

    async with raw_server(hang_up) as url:
        with pytest.raises(ws_client.HandshakeError, match="during the WebSocket handshake"):
            await connect(url)

    async def endless(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: bytes) -> None:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Pad: " + b"a" * 20000)
        await writer.drain()
        await asyncio.Event().wait()

    async with raw_server(endless) as url:
        with pytest.raises(ws_client.HandshakeError, match="over"):
            await connect(url)


async def test_frames_in_the_same_write_as_the_101_are_kept() -> None:
    async def eager(_: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
        writer.write(upgrade_response(key) + server_frame(OP_TEXT, b"first") + server_frame(OP_TEXT, b"second"))
        await writer.drain()
        await asyncio.Event().wait()

    async with raw_server(eager) as url:
        client = await connect(url)
        assert client.recv_nowait() == b"first"  # already there when connect() returned
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"second"
        client.abort()


# --- receiving ----------------------------------------------------------------------------------------------------

async def test_the_sink_takes_messages_in_order_and_a_failing_one_is_detached() -> None:
    """A reader attached to the socket handles messages inside the read callback while none is queued ahead;
    what it declines goes to `recv`, in order; a reader that raises is detached and its message received."""
    sunk: list[bytes] = []

    def sink(data: bytes) -> bool:
        if data == b"boom":
            raise RuntimeError("reader bug")
        if data.startswith(b"sink"):
            sunk.append(data)
            return True
        return False

    async with ws_server(echo) as url:
        client = await connect(url)
        client.sink = sink
        for text in (b"sink-1", b"keep-1"):
            client.send_text(text)
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"keep-1"
        for text in (b"boom", b"sink-2"):
            client.send_text(text)
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"boom"
        assert client.sink is None  # detached: what follows is received
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"sink-2"
        assert sunk == [b"sink-1"]
        await asyncio.wait_for(client.close(), WAIT_S)


async def test_a_fragmented_message_comes_out_whole() -> None:
    async def fragments(ws: ServerConnection) -> None:
        await ws.send(["hel", "lo ", "world"])
        await ws.wait_closed()

    async with ws_server(fragments) as url:
        client = await connect(url)
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"hello world"
        await asyncio.wait_for(client.close(), WAIT_S)


async def test_fragments_split_across_reads_with_a_ping_between() -> None:
    async def slow(_: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
        writer.write(upgrade_response(key))
        first = bytes((OP_TEXT, 3)) + b"abc"  # FIN clear
        wire = first + server_frame(OP_PING, b"p") + bytes((0x80 | OP_CONT, 3)) + b"def"
        for i in range(len(wire)):  # one byte per write
            writer.write(wire[i:i + 1])
            await writer.drain()
        await asyncio.Event().wait()

    async with raw_server(slow) as url:
        client = await connect(url)
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"abcdef"
        client.abort()


async def test_a_server_ping_is_answered_with_its_payload() -> None:
    latency: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def pinger(ws: ServerConnection) -> None:
        pong = await ws.ping(b"are you there")
        latency.set_result(await asyncio.wait_for(pong, WAIT_S))
        await ws.wait_closed()

    async with ws_server(pinger, ping_interval=None) as url:
        client = await connect(url)  # nobody calls recv(): pongs do not depend on a reader
        assert await asyncio.wait_for(latency, WAIT_S) >= 0
        await asyncio.wait_for(client.close(), WAIT_S)


async def test_server_close_is_echoed_and_recv_raises_after_the_queued_messages() -> None:
    codes: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def goodbye(ws: ServerConnection) -> None:
        await ws.send("a")
        await ws.send(b"b")
        await ws.close(4001, "bye")
        codes.set_result(ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None)

    async with ws_server(goodbye) as url:
        client = await connect(url)
        assert await asyncio.wait_for(codes, WAIT_S) == 4001  # our close frame echoed the server's code
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"a"
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"b"
        with pytest.raises(ws_client.ConnectionClosed) as info:
            await asyncio.wait_for(client.recv(), WAIT_S)
        assert (info.value.code, info.value.reason) == (4001, "bye")
        with pytest.raises(ws_client.ConnectionClosed):
            client.send_text(b"late")
        await asyncio.wait_for(client.close(), WAIT_S)  # already closed: returns


async def test_a_waiting_recv_is_woken_by_the_close() -> None:
    async def later_close(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(1001)

    async with ws_server(later_close) as url:
        client = await connect(url)
        waiting = asyncio.ensure_future(client.recv())  # waiting long before the server's close can arrive
        client.send_text(b"go")
        with pytest.raises(ws_client.ConnectionClosed, match="1001"):
            await asyncio.wait_for(waiting, WAIT_S)


async def test_an_oversize_message_closes_with_1009() -> None:
    received: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def big(ws: ServerConnection) -> None:
        await ws.send("ok")
        await ws.recv()  # "ok" was received: not in the same read as the big one (see the test below)
        await ws.send("x" * 2000)
        await ws.wait_closed()
        received.set_result(ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None)

    async with ws_server(big) as url:
        client = await connect(url, max_size=1000)
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"ok"
        client.send_text(b"got it")
        with pytest.raises(ws_client.ConnectionClosed) as info:
            await asyncio.wait_for(client.recv(), WAIT_S)
        assert info.value.code == 1009
        assert await asyncio.wait_for(received, WAIT_S) == 1009


async def test_a_message_before_a_bad_frame_in_the_same_read_is_delivered() -> None:
    async def good_then_bad(_: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
        writer.write(upgrade_response(key))
        await writer.drain()
        writer.write(server_frame(OP_TEXT, b"good") + bytes((0xC0 | OP_TEXT, 1)) + b"x")  # RSV1 set: 1002
        await writer.drain()
        await asyncio.Event().wait()

    async with raw_server(good_then_bad) as url:
        client = await connect(url)
        try:
            assert await asyncio.wait_for(client.recv(), WAIT_S) == b"good"
        finally:
            client.abort()


async def test_a_masked_server_frame_is_a_protocol_error() -> None:
    answer: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def masked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
        writer.write(upgrade_response(key) + bytes((0x80 | OP_TEXT, 0x80 | 1)) + b"\0\0\0\0a")
        async for opcode, payload in client_frames(reader):
            if opcode == OP_CLOSE:
                answer.set_result(parse_close(payload))

    async with raw_server(masked) as url:
        client = await connect(url)
        with pytest.raises(ws_client.ConnectionClosed, match="1002"):
            await asyncio.wait_for(client.recv(), WAIT_S)
        assert (await asyncio.wait_for(answer, WAIT_S))[0] == 1002


async def test_reading_pauses_past_the_threshold_and_resumes_below_half() -> None:
    total = 3 * ws_client.QUEUE_HIGH

    async def flood(ws: ServerConnection) -> None:
        await ws.recv()  # the client has wrapped its transport
        for i in range(total):
            await ws.send(str(i))
        await ws.wait_closed()

    async with ws_server(flood) as url:
        client = await connect(url)
        transport: Any = client._transport
        calls: list[tuple[str, int]] = []
        paused = asyncio.Event()
        pause, resume = transport.pause_reading, transport.resume_reading

        def on_pause() -> None:
            calls.append(("pause", len(client._queue)))
            paused.set()
            pause()

        def on_resume() -> None:
            calls.append(("resume", len(client._queue)))
            resume()

        transport.pause_reading, transport.resume_reading = on_pause, on_resume
        client.send_text(b"go")
        await asyncio.wait_for(paused.wait(), WAIT_S)
        assert calls[0][0] == "pause" and calls[0][1] > ws_client.QUEUE_HIGH and not transport.is_reading()
        got = [await asyncio.wait_for(client.recv(), WAIT_S) for _ in range(total)]
        assert got == [str(i).encode() for i in range(total)]
        assert [kind for kind, _ in calls] == ["pause", "resume"] * (len(calls) // 2)
        assert all(n < ws_client.QUEUE_LOW for kind, n in calls if kind == "resume")
        assert len(calls) <= 2 * (total // ws_client.QUEUE_LOW)  # per burst, not per message
        assert transport.is_reading()
        await asyncio.wait_for(client.close(), WAIT_S)


# --- keepalive and closing ----------------------------------------------------------------------------------------

async def test_a_server_that_never_answers_pings_is_dropped_after_the_timeout() -> None:
    pings: list[bytes] = []

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
        writer.write(upgrade_response(key))
        async for opcode, payload in client_frames(reader):
            if opcode == OP_PING:
                pings.append(payload)

    async with raw_server(deaf) as url:
        loop = asyncio.get_running_loop()
        started = loop.time()
        client = await connect(url, ping_interval=0.05, ping_timeout=0.05)
        with pytest.raises(ws_client.ConnectionClosed, match="keepalive") as info:
            await asyncio.wait_for(client.recv(), WAIT_S)
        assert info.value.code == 1011 and loop.time() - started >= 0.1
        assert len(pings) == 1 and len(pings[0]) == 4


async def test_a_server_that_answers_pings_keeps_the_connection() -> None:
    answered: list[bytes] = []
    enough = asyncio.Event()

    async def polite(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
        writer.write(upgrade_response(key))
        async for opcode, payload in client_frames(reader):
            if opcode == OP_PING:
                writer.write(server_frame(OP_PONG, b"unsolicited") + server_frame(OP_PONG, payload))
                answered.append(payload)
                if len(answered) == 4:
                    enough.set()

    async with raw_server(polite) as url:
        client = await connect(url, ping_interval=0.02, ping_timeout=0.05)
        await asyncio.wait_for(enough.wait(), WAIT_S)  # four intervals and more than one timeout have passed
        assert not client.closed and client.recv_nowait() is None
        assert len(set(answered)) == len(answered)  # a fresh payload each time
        client.abort()


async def test_close_does_not_wait_forever_for_a_silent_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
        writer.write(upgrade_response(key))
        await asyncio.Event().wait()

    async with raw_server(silent) as url:
        client = await connect(url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(client.close(timeout_s=0.1), WAIT_S)
        assert 0.1 <= loop.time() - started < WAIT_S
        with pytest.raises(ws_client.ConnectionClosed):
            client.recv_nowait()


async def test_a_lost_socket_wakes_the_reader_and_fails_sends() -> None:
    async def drop(_: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
        writer.write(upgrade_response(key) + server_frame(OP_TEXT, b"last"))
        await writer.drain()
        writer.transport.abort()

    async with raw_server(drop) as url:
        client = await connect(url)
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"last"
        with pytest.raises(ws_client.ConnectionClosed) as info:
            await asyncio.wait_for(client.recv(), WAIT_S)
        assert info.value.code == 1006
        with pytest.raises(ws_client.ConnectionClosed):
            client.send_text(b"x")


async def test_wss_uses_tls_with_the_host_name(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)
    async with serve(echo, "127.0.0.1", 0, ssl=server_ctx) as server:
        url = f"wss://localhost:{server.sockets[0].getsockname()[1]}/"
        with pytest.raises(ssl.SSLError):  # the default context does not trust our certificate
            await connect(url)
        client = await connect(url, ssl=client_ctx)
        client.send_text(b"over tls")
        assert await asyncio.wait_for(client.recv(), WAIT_S) == b"over tls"
        await asyncio.wait_for(client.close(), WAIT_S)


def self_signed(where: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = where / "cert.pem", where / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


# --- RealtimeClient on top ----------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def grok_like(refuse_model_with: int | None) -> AsyncIterator[tuple[str, list[str]]]:
    """A tiny realtime server: session.created, then session.updated echoing the session; a ?model= URL is
    refused with `refuse_model_with` (when set)."""
    paths: list[str] = []

    def process_request(_: ServerConnection, request: Request) -> Response | None:
        paths.append(request.path)
        if refuse_model_with and "model=" in request.path:
            return Response(refuse_model_with, "No", Headers({"Content-Length": "0"}), b"")
        return None

    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "session": {}}))
        update = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "ping"}))
        await ws.send(json.dumps({"type": "session.updated", "session": update["session"]}))
        async for message in ws:
            await ws.send(json.dumps({"type": "echo", "of": json.loads(message)["type"]}))

    async with serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime", paths


def settings_for(url: str) -> GatewaySettings:
    return GatewaySettings(public_base_url="http://127.0.0.1:9", twilio_account_sid="AC" + "0" * 32,
                           twilio_auth_token="t", xai_api_key="k", xai_realtime_url=url, realtime_model="grok-x",
                           realtime_model_in_query=True)  # type: ignore[call-arg]


def session() -> dict[str, Any]:
    return {"audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}}


async def test_realtime_client_retries_a_refused_model_query_once_without_it() -> None:
    async with grok_like(refuse_model_with=400) as (url, paths):
        client = await RealtimeClient.open(settings_for(url), session(), timeout_s=WAIT_S)
        try:
            assert paths == ["/v1/realtime?model=grok-x", "/v1/realtime"] and client.url == url
            assert client.first_event == "session.created"
            await client.send(rt.response_cancel())
            event = await asyncio.wait_for(client.recv(), WAIT_S)
            assert event.type == "echo" or isinstance(event, rt.UnknownEvent)
        finally:
            await client.close()
        assert client.closed
        with pytest.raises(RealtimeError, match="closed"):
            await client.send(rt.response_cancel())


async def test_realtime_client_does_not_retry_a_refused_key() -> None:
    async with grok_like(refuse_model_with=403) as (url, paths):
        with pytest.raises(RealtimeError, match="HTTP 403"):
            await RealtimeClient.open(settings_for(url), session(), timeout_s=WAIT_S)
        assert paths == ["/v1/realtime?model=grok-x"]


async def test_realtime_client_turns_a_lost_socket_into_realtime_error() -> None:
    async with grok_like(refuse_model_with=None) as (url, _):
        client = await RealtimeClient.open(settings_for(url), session(), timeout_s=WAIT_S)
        client._ws.abort()
        with pytest.raises(RealtimeError, match="closed"):
            await asyncio.wait_for(client.recv(), WAIT_S)
        await client.close()

