"""What a running service gets (settings, NATS, a publisher) and what it hands back (routes, tasks, stop).

Both run shapes use this: `haggle up` starts every service on one Runtime and one HTTP port;
`haggle run SERVICE` starts one. Services never import each other; they meet on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import APIRouter
from haggle_contracts import subjects
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from . import bus
from .config import Settings
from .consumer import EventConsumer, Handler
from .logs import mask_urls

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    nc: NatsClient
    js: JetStreamContext
    publisher: bus.Publisher

    @classmethod
    async def connect(cls, settings: Settings, nats_url: str, *, name: str = "haggle") -> Runtime:
        nc = await bus.connect(nats_url, name=name, deadline_s=settings.nats_connect_timeout_s,
                               creds=settings.nats_creds)
        js = nc.jetstream()
        options = bus.TopologyOptions(
            max_age_s=settings.stream_max_age_s,
            replicas=settings.stream_replicas,
            # a call context is needed from the dial to the call's end: ringing, the call's limit, and margin
            calls_ttl_s=float(settings.ring_timeout_s + settings.call_time_limit_s + 3600),
        )
        deadline = asyncio.get_running_loop().time() + 60
        while True:  # a cluster that is still electing its JetStream leader answers errors for a moment
            try:
                await bus.ensure_topology(js, options)
                break
            except Exception as exc:
                if asyncio.get_running_loop().time() > deadline:
                    await nc.close()
                    raise RuntimeError(f"JetStream is not ready at {mask_urls(nats_url)}: {exc}") from exc
                log.warning("JetStream not ready (%s); retrying", exc)
                await asyncio.sleep(0.5)
        return cls(settings=settings, nc=nc, js=js, publisher=bus.Publisher(js))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()


@dataclass
class ServiceHandle:
    """A started service: its HTTP routes (mounted by the caller), its background tasks, and how to stop it."""

    name: str
    routers: list[APIRouter] = field(default_factory=list)
    consumers: list[EventConsumer] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    on_stop: list[Callable[[float], Awaitable[None]]] = field(default_factory=list)  # given the deadline
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def consume(
        self, rt: Runtime, durable: str, handler: Handler, *, concurrency: int = 1, ordered: bool = False
    ) -> EventConsumer:
        consumer = EventConsumer(rt.js, subjects.CONSUMERS[durable], handler, concurrency=concurrency,
                                 ordered=ordered)
        self.consumers.append(consumer)
        self.tasks.append(asyncio.create_task(_supervise(consumer), name=f"{self.name}:{durable}"))
        return consumer

    def background(self, coro: Awaitable[None], name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=f"{self.name}:{name}"))  # type: ignore[arg-type]

    async def stop(self, deadline_s: float = 10.0) -> None:
        for consumer in self.consumers:
            consumer.stop()
        for hook in self.on_stop:  # e.g. the gateway drains live calls here, while NATS is still up
            try:
                await asyncio.wait_for(hook(deadline_s), deadline_s + 1.0)
            except Exception:
                log.exception("%s: stop hook failed", self.name)
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=deadline_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for close in self.on_close:  # resources the tasks used (stores) go last
            try:
                await close()
            except Exception:
                log.exception("%s: close failed", self.name)


async def _supervise(consumer: EventConsumer) -> None:
    """Keep a consumer loop alive across errors (e.g. NATS down at start); it stops only when asked."""
    delay = 0.2
    while not consumer._stopping.is_set():
        try:
            await consumer.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("consumer %s stopped (%s); restarting in %.1fs", consumer.spec.durable, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
