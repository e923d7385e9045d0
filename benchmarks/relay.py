"""The floor: a bare pass-through relay between a Twilio media stream and a realtime session.

What any Python relay must do at the least, with the same libraries a straightforward one would use
(`websockets` on both sides, `json.loads`/`json.dumps`): accept the Twilio WebSocket, open one upstream
WebSocket per call on `start`, and forward payloads both ways in the same JSON shapes the gateway uses.
No auth, no marks, no barge-in, no events, no NATS. The gateway's figures are reported as ratios to this.

    python -m benchmarks.relay --realtime-url ws://... [--audio-format pcmu|pcm24k] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from . import serve as proc
from .procstat import raise_fd_limit

log = logging.getLogger("benchmarks.relay")


class Relay:
    def __init__(self, realtime_url: str, audio_format: str) -> None:
        self.realtime_url = realtime_url
        fmt = {"type": "audio/pcmu"} if audio_format == "pcmu" else {"type": "audio/pcm", "rate": 24000}
        self.session_update = json.dumps({"type": "session.update",
                                          "session": {"audio": {"input": {"format": fmt}, "output": {"format": fmt}}}})
        self.calls = 0
        self.errors = 0

    async def handle(self, ws: ServerConnection) -> None:
        upstream: ClientConnection | None = None
        pump: asyncio.Task[None] | None = None
        try:
            async for raw in ws:
                msg = json.loads(raw)
                event = msg.get("event")
                if event == "media":
                    if upstream is not None:
                        await upstream.send(json.dumps({"type": "input_audio_buffer.append",
                                                        "audio": msg["media"]["payload"]}))
                elif event == "start":
                    start = msg["start"]
                    upstream = await connect(f"{self.realtime_url}?call_id={start['customParameters']['call_id']}",
                                             compression=None, proxy=None)
                    await upstream.send(self.session_update)
                    pump = asyncio.create_task(self._downstream(upstream, ws, start["streamSid"]))
                    self.calls += 1
                elif event == "stop":
                    break
        except (ConnectionClosed, OSError, KeyError, ValueError) as exc:
            self.errors += 1
            log.warning("relay call failed: %s", exc)
        finally:
            if pump is not None:
                pump.cancel()
            if upstream is not None:
                await upstream.close()

    @staticmethod
    async def _downstream(upstream: ClientConnection, ws: ServerConnection, stream_sid: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in upstream:
                msg = json.loads(raw)
                if msg.get("type") == "response.output_audio.delta":
                    await ws.send(json.dumps({"event": "media", "streamSid": stream_sid,
                                              "media": {"payload": msg["delta"]}}))


async def main(args: argparse.Namespace) -> None:
    relay = Relay(args.realtime_url, args.audio_format)
    async with serve(relay.handle, "127.0.0.1", 0, compression=None, max_size=65536) as server:
        heap = proc.full_collection()
        pauses = proc.GcPauses()
        proc.announce(next(iter(server.sockets)).getsockname()[1])
        await proc.until_stdin_closes(pauses)
        gc_window = pauses.summary()
    proc.report({"calls": relay.calls, "errors": relay.errors, "gc": gc_window, "heap": heap})


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--realtime-url", required=True)
    p.add_argument("--audio-format", choices=["pcmu", "pcm24k"], default="pcmu")
    p.add_argument("--loop", choices=proc.LOOPS, default="asyncio")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    proc.run(lambda: main(args), args.loop)


if __name__ == "__main__":
    cli()
