"""The event path: UtteranceTranscribed published -> the provider row in the projection shows it.

A fresh nats-server and the real projector service (`haggle_projector.run.start`, SQLite store, its durable
ordered consumer) run in this process. `calls` simulated calls each publish one utterance every `interval_s`
(random phase, so the rate is steady, like the gateway's outboxes during `calls` live calls). The lag of an
utterance is the time from just before its publish to the moment the projector's store write that first
contains it has returned (the store's `upsert_many`, through which the projector writes each event's rows in one
transaction, is wrapped; nothing else is changed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from pathlib import Path
from typing import Any

from haggle_contracts import events as ev
from haggle_contracts.state import ProviderState
from haggle_projector import run as projector_run

from haggle.config import Settings
from haggle.nats_embedded import EmbeddedNats
from haggle.runtime import Runtime

from .stats import percentile, rounded

log = logging.getLogger(__name__)


async def measure(data_dir: Path, *, calls: int = 100, duration_s: float = 20.0, interval_s: float = 3.0,
                  settle_s: float = 5.0) -> dict[str, Any]:
    nats = await asyncio.to_thread(EmbeddedNats(data_dir / "nats").start)  # it creates its folder
    try:
        settings = Settings(nats_url=nats.url, data_dir=data_dir)
        rt = await Runtime.connect(settings, nats.url, name="bench-events")
        try:
            return await _run(rt, calls=calls, duration_s=duration_s, interval_s=interval_s, settle_s=settle_s)
        finally:
            await rt.close()
    finally:
        nats.stop()


async def _run(rt: Runtime, *, calls: int, duration_s: float, interval_s: float, settle_s: float) -> dict[str, Any]:
    handle = await projector_run.start(rt)
    store = handle.store  # type: ignore[attr-defined]
    published_at: dict[str, float] = {}
    lags: list[float] = []
    rows = 0
    original = store.upsert_many
    changed = asyncio.Event()

    async def timed_upsert_many(states: list[ProviderState]) -> None:
        nonlocal rows
        await original(states)
        now = time.perf_counter()
        rows += len(states)
        for row in states:
            for u in row.transcript:
                at = published_at.pop(u.utterance_id, None)
                if at is not None:
                    lags.append((now - at) * 1000.0)
        changed.set()

    store.upsert_many = timed_upsert_many
    job_id = f"benchjob_{secrets.token_hex(4)}"
    providers = [ev.ProviderSpec(id=f"bp{i}_{secrets.token_hex(3)}", service_provider=f"Bench {i}",
                                 phone_number=f"+1415555{i:04d}") for i in range(calls)]
    try:
        await rt.publisher.publish(ev.JobStarted(event_id=ev.new_id("evt"), job_id=job_id, problem="leaking faucet",
                                                 zip_code="94110", max_price=180.0, providers=providers))

        async def until_rows() -> None:
            while rows < calls:
                changed.clear()
                await changed.wait()

        await asyncio.wait_for(until_rows(), 30)
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_s
        published = 0

        async def call(spec: ev.ProviderSpec, sid: str) -> None:
            nonlocal published
            await asyncio.sleep(random.uniform(0, interval_s))  # independent calls: random phase
            seq = 0
            while loop.time() < end:
                uid = f"item_{sid}_{seq}"
                event = ev.UtteranceTranscribed(
                    event_id=f"utt-{sid}-{uid}", job_id=job_id, provider_id=spec.id, attempt=1, call_sid=sid,
                    utterance_id=uid, seq=seq, role=ev.Role.USER if seq % 2 else ev.Role.ASSISTANT,
                    text="Our standard visit fee is eighty-nine dollars, plus parts and labour.")
                published_at[uid] = time.perf_counter()
                await rt.publisher.publish(event)
                published += 1
                seq += 1
                await asyncio.sleep(interval_s)  # the simulated speaking pace

        await asyncio.gather(*(call(p, f"CA{secrets.token_hex(16)}") for p in providers))

        async def until_applied() -> None:
            while published_at:
                changed.clear()
                await changed.wait()

        try:
            await asyncio.wait_for(until_applied(), settle_s)
        except TimeoutError:
            log.warning("event path: %d utterance(s) not projected within %.0fs", len(published_at), settle_s)
        lags.sort()
        return {
            "calls": calls,
            "utterances": published,
            "rate_per_s": round(published / duration_s, 1),
            "projected": len(lags),
            "not_projected": len(published_at),
            "lag_p50_ms": rounded(percentile(lags, 0.50)),
            "lag_p99_ms": rounded(percentile(lags, 0.99)),
            "lag_max_ms": rounded(lags[-1] if lags else None),
        }
    finally:
        await handle.stop(2.0)
