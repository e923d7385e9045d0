"""Client-side CPU per message: the gateway's `ws_client` against the `websockets` library's ClientConnection.

`python benchmarks/ws_client_rtt.py [N] [ROUNDS]` starts a `websockets` echo server in a child process (so its CPU
is not counted), then, in this process, times N sequential round trips of a 300-byte text message with each
client, alternating, ROUNDS times. Reported: client CPU time (`time.process_time`) and wall time per round trip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from haggle_gateway import ws_client
from websockets.asyncio.client import connect as ws_connect

SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0, compression=None, max_size=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""

# On a machine with two or more cores the server gets the last one (run this process with `taskset -c 0`).
TASKSET = ["taskset", "-c", str(os.cpu_count() - 1)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
PAYLOAD = (b'{"type":"input_audio_buffer.append","audio":"' + b"A" * 300)[:298] + b'"}'


BATCH = 50  # pipelined: 50 messages out, then their 50 echoes in (a call's traffic is not lock-step)


async def run_ours(url: str, n: int, batch: int) -> tuple[float, float]:
    client = await ws_client.connect(url, {}, max_size=4 << 20, ping_interval=20, ping_timeout=20)

    async def trips(count: int) -> bytes | None:
        data = None
        for _ in range(count // batch):
            for _ in range(batch):
                client.send_text(PAYLOAD)
                if client.write_paused:
                    await client.drain()
            for _ in range(batch):
                data = client.recv_nowait()
                if data is None:
                    data = await client.recv()
        return data

    result = await timed(trips, n)
    await client.close()
    return result


async def run_websockets(url: str, n: int, batch: int) -> tuple[float, float]:
    ws = await ws_connect(url, proxy=None, compression=None, max_size=4 << 20, ping_interval=20, ping_timeout=20)

    async def trips(count: int) -> bytes | str | None:
        data = None
        for _ in range(count // batch):
            for _ in range(batch):
                await ws.send(PAYLOAD, text=True)
            for _ in range(batch):
                data = await ws.recv(decode=False)
        return data

    result = await timed(trips, n)
    await ws.close()
    return result


async def timed(trips: Callable[[int], Awaitable[object]], n: int) -> tuple[float, float]:
    """CPU and wall seconds of `n` round trips, after a warm-up of 1000."""
    await trips(1000)
    cpu, wall = time.process_time(), time.perf_counter()
    data = await trips(n)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert data == PAYLOAD
    return cpu, wall


async def measure(url: str, n: int, rounds: int) -> None:
    for batch, label in ((1, "lock-step"), (BATCH, f"pipelined {BATCH} at a time")):
        results: dict[str, list[tuple[float, float]]] = {"ws_client": [], "websockets": []}
        for _ in range(rounds):
            results["ws_client"].append(await run_ours(url, n, batch))
            results["websockets"].append(await run_websockets(url, n, batch))
        print(f"N={n} round trips of a {len(PAYLOAD)}-byte text message, {label}, {rounds} rounds (median; min)")
        for name, runs in results.items():
            cpu = [c / n * 1e6 for c, _ in runs]
            wall = [w / n * 1e6 for _, w in runs]
            print(f"  {name:11s} client CPU {statistics.median(cpu):6.1f} us/rt (min {min(cpu):6.1f}), "
                  f"wall {statistics.median(wall):6.1f} us/rt (min {min(wall):6.1f})")


def main(n: int, rounds: int) -> None:
    server = subprocess.Popen([*TASKSET, sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        asyncio.run(measure(f"ws://127.0.0.1:{server.stdout.readline().strip()}/", n, rounds))
    finally:
        server.communicate("")  # EOF on stdin stops the server
        server.wait(10)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000, int(sys.argv[2]) if len(sys.argv) > 2 else 5)
