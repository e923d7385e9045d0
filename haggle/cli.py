"""`haggle`: one command for every shape and chore.

    haggle up [--simulate] [--port N]      every service in one process, one port (embedded NATS by default)
    haggle run SERVICE [--port N]          one service: projector | dispatcher | media-gateway | extractor
    haggle demo                            a simulated three-provider job end to end, then a table of results
    haggle events replay --job ID          a job's event history in order (the audit view)
    haggle projector rebuild               replay the whole stream into an empty projection
    haggle extract-price [--offline] FILE  price and agreement for transcripts in a JSON or JSONL file
    haggle contracts asyncapi              the AsyncAPI document of the event catalog
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from .audit import describe
from .config import ConfigError, Settings
from .logs import setup_logging

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.js import JetStreamContext

log = logging.getLogger("haggle")


def _settings() -> Settings:
    return Settings.from_env()


async def _cmd_up(args: argparse.Namespace) -> int:
    from .system import run_until_signal, start_system

    settings = _settings()
    if args.port is not None:
        settings = settings.with_(port=args.port)
    if args.simulate:
        from .simulate import simulated_world

        async with simulated_world(settings) as world:
            system = await start_system(world.settings)
            world.attach(system)
            print(f"haggle up (simulated Twilio and xAI) on {system.base_url}  dashboard: {system.base_url}/",
                  flush=True)
            await run_until_signal(system, drain_s=system.settings.drain_s)
        return 0
    system = await start_system(settings)
    print(f"haggle up on {system.base_url}", flush=True)
    await run_until_signal(system, drain_s=system.settings.drain_s)
    return 0


async def _cmd_run(args: argparse.Namespace) -> int:
    from .system import run_until_signal, start_system

    settings = _settings()
    if args.port is not None:
        settings = settings.with_(port=args.port)
    if settings.nats_url is None:
        raise ConfigError("NATS_URL is not set: `haggle run` joins an existing NATS (use `haggle up` for embedded)")
    system = await start_system(settings, [args.service])
    print(f"haggle {args.service} on {system.base_url}", flush=True)
    await run_until_signal(system, drain_s=system.settings.drain_s)
    return 0


@contextlib.asynccontextmanager
async def _with_js(settings: Settings) -> AsyncIterator[tuple[NatsClient, JetStreamContext]]:
    """A JetStream context on the configured NATS, or on the embedded server's data if none is configured."""
    from . import bus
    from .nats_embedded import EmbeddedNats

    embedded = None
    url = settings.nats_url
    if url is None:
        embedded = EmbeddedNats(settings.data_dir / "nats").start()
        url = embedded.url
    nc = await bus.connect(url, name="haggle-cli")
    js = nc.jetstream()
    await bus.ensure_topology(js, bus.TopologyOptions(max_age_s=settings.stream_max_age_s,
                                                      replicas=settings.stream_replicas))
    try:
        yield nc, js
    finally:
        await nc.close()
        if embedded:
            embedded.stop()


async def _cmd_replay(args: argparse.Namespace) -> int:
    from haggle_contracts import codec, subjects

    from . import bus

    settings = _settings()
    async with _with_js(settings) as (_, js):
        count = 0
        async for stored in bus.replay(js, subjects.job_filter(args.job)):
            count += 1
            if args.json:
                body = json.loads(codec.encode(stored.event)) if stored.event else {"error": stored.error}
                print(json.dumps({"seq": stored.seq, "subject": stored.subject, "event": body}))
            else:
                print(describe(stored))
        if count == 0:
            print(f"no events for job {args.job}", file=sys.stderr)
            return 1
        return 0


async def _cmd_rebuild(args: argparse.Namespace) -> int:
    from haggle_projector.projector import rebuild
    from haggle_projector.run import store_from

    from .runtime import Runtime

    settings = _settings()
    async with _with_js(settings) as (nc, js):
        from . import bus

        rt = Runtime(settings=settings, nc=nc, js=js, publisher=bus.Publisher(js))
        store = store_from(rt)
        await store.open()
        try:
            count = await rebuild(js, store)
        finally:
            await store.close()
        print(f"rebuilt the projection from {count} event(s)")
        return 0


async def _cmd_extract(args: argparse.Namespace) -> int:
    from haggle_extractor.cli import extract_file

    settings = _settings()
    return await extract_file(Path(args.file), settings=settings, offline=args.offline)


async def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return await run_demo(_settings(), timeout_s=args.timeout)


def _cmd_asyncapi(args: argparse.Namespace) -> int:
    from haggle_contracts.asyncapi import document

    print(json.dumps(document(), indent=2, sort_keys=False))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="haggle", description="AI phone agent that gets and negotiates quotes.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run every service in one process on one port")
    up.add_argument("--port", type=int, default=None)
    up.add_argument("--simulate", action="store_true", help="run against the built-in Twilio and xAI stand-ins")

    run = sub.add_parser("run", help="run one service (needs NATS_URL)")
    run.add_argument("service", choices=["projector", "dispatcher", "media-gateway", "extractor"])
    run.add_argument("--port", type=int, default=None)

    demo = sub.add_parser("demo", help="a simulated three-provider job, end to end")
    demo.add_argument("--timeout", type=float, default=120.0)

    events = sub.add_parser("events", help="the event log")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    replay = events_sub.add_parser("replay", help="print a job's event history in order")
    replay.add_argument("--job", required=True)
    replay.add_argument("--json", action="store_true", help="one JSON object per line")

    projector = sub.add_parser("projector", help="the provider projection")
    projector_sub = projector.add_subparsers(dest="projector_command", required=True)
    projector_sub.add_parser("rebuild", help="replay the whole stream into an empty store")

    extract = sub.add_parser("extract-price", help="extract price and agreement from transcript file(s)")
    extract.add_argument("--offline", action="store_true", help="use the deterministic extractor only")
    extract.add_argument("file")

    contracts = sub.add_parser("contracts", help="the event catalog")
    contracts_sub = contracts.add_subparsers(dest="contracts_command", required=True)
    contracts_sub.add_parser("asyncapi", help="print the AsyncAPI document")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "demo" or getattr(args, "simulate", False):
        # The stand-ins listen on plain loopback, so the simulated world's public URL is http:// by design.
        os.environ.setdefault("ALLOW_INSECURE_PUBLIC_URL", "1")
    setup_logging(debug=args.verbose, quiet=args.command in ("extract-price", "contracts", "events", "demo"))
    handlers = {
        "up": _cmd_up,
        "run": _cmd_run,
        "demo": _cmd_demo,
        "extract-price": _cmd_extract,
    }
    try:
        if args.command == "contracts":
            return _cmd_asyncapi(args)
        if args.command == "events":
            return asyncio.run(_cmd_replay(args))
        if args.command == "projector":
            return asyncio.run(_cmd_rebuild(args))
        if args.command in ("up", "run"):  # the serving commands run on uvloop where it is installed
            from .loop import run

            return run(handlers[args.command](args))
        return asyncio.run(handlers[args.command](args))
    except ConfigError as exc:
        print(f"haggle: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
