"""The media gateway under test, alone in its own process so its CPU seconds and memory are its own.

It is `haggle run media-gateway` (haggle.system.start_system) minus the settings plumbing: the same Runtime
on NATS, the same `start_gateway`, the same FastAPI app from `build_app`, the same uvicorn options and the same
garbage-collector pacing after start (haggle/gc_pacing.py), but the GatewaySettings are built here so the
benchmark can point the realtime URL at its load generator and choose `outbound_chunk_ms` and the audio format.
Twilio's REST hang-up is a no-op: benchmark calls end with `stop`.

    python -m benchmarks.gateway_proc --nats URL --realtime-url ws://... [--audio-format pcmu|pcm24k]
        [--chunk-ms 40] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
from collections.abc import Iterator

import uvicorn
from haggle_gateway.app import start_gateway
from haggle_gateway.settings import GatewaySettings

from haggle import system
from haggle.config import Settings
from haggle.gc_pacing import FullCollections
from haggle.logs import setup_logging
from haggle.runtime import Runtime, ServiceHandle
from haggle.system import build_app

from . import experiments, serve
from .procstat import raise_fd_limit

log = logging.getLogger("benchmarks.gateway")

ACCOUNT_SID = "AC" + "0" * 32


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the parent stops us through stdin."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _no_hangup(call_sid: str) -> None:
    return None


async def main(args: argparse.Namespace) -> None:
    settings = Settings(nats_url=args.nats, public_base_url="http://127.0.0.1:8000")
    rt = await Runtime.connect(settings, args.nats, name="bench-gateway")
    gw_settings = GatewaySettings(
        public_base_url="http://127.0.0.1:8000",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token="bench-auth-token",
        xai_api_key="xai-bench",
        xai_realtime_url=args.realtime_url,
        audio_format=args.audio_format,
        outbound_chunk_ms=args.chunk_ms,
    )
    service = await start_gateway(rt.nc, rt.js, gw_settings, rt.publisher, hangup=_no_hangup)
    app = build_app([ServiceHandle("media-gateway", routers=[service.router])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, **system.uvicorn_options())  # as haggle up serves
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn exited at start")
        await asyncio.sleep(0.01)  # uvicorn exposes no start event to await
    heap = serve.full_collection()  # what one gen-2 pass over the started process costs
    collections = None
    if "nogcfreeze" in args.experiment:
        pass  # CPython's collector as it comes
    elif "cpythongc" in args.experiment:
        gc.freeze()  # the start-up heap frozen, full passes on CPython's own rule
    else:
        collections = FullCollections()  # as haggle.system.start_system does once the process has started
        collections.install()
        collections.start()
    if "nogcfreeze" not in args.experiment:
        heap["after_freeze_ms"] = serve.full_collection()["full_gc_ms"]
    pauses = serve.GcPauses()
    serve.announce(server.servers[0].sockets[0].getsockname()[1])
    await serve.until_stdin_closes(pauses)
    gc_window = pauses.summary()
    if collections is not None:
        gc_window["paced_passes"] = collections.passes
        collections.uninstall()
    stats = dict(service.registry.stats)
    await service.stop(deadline_s=3.0)
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)
    await rt.close()
    serve.report({"registry": stats, "gc": gc_window, "heap": heap})


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nats", required=True)
    p.add_argument("--realtime-url", required=True)
    p.add_argument("--audio-format", choices=["pcmu", "pcm24k"], default="pcmu")
    p.add_argument("--chunk-ms", type=int, default=40)
    p.add_argument("--loop", choices=serve.LOOPS, default="asyncio")
    p.add_argument("--experiment", action="append", default=[], help="see benchmarks.experiments")
    args = p.parse_args()
    experiments.apply(args.experiment)
    setup_logging(quiet=True)
    raise_fd_limit()
    serve.run(lambda: main(args), args.loop)


if __name__ == "__main__":
    cli()
