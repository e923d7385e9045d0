"""Bounded waits on a running system, shared by the test modules that start one: a service answering /healthz, a
job settled in the projection, JobCompleted on the log, a job's events as they are published (`JobWatch`). The
projection and /healthz are HTTP read models with nothing to subscribe to, so those two poll (every 0.1 s, always
under a timeout). Also the end-to-end setup those modules share: every service on the simulated world
(`running_world`) and the job they post (`job_body`); and what a KV bucket holds (`kv_entries`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import httpx
from haggle_contracts import codec, subjects
from haggle_contracts import events as ev
from haggle_sim.personas import Persona, PersonaBook

from haggle import bus
from haggle.config import Settings
from haggle.simulate import World, simulated_world
from haggle.system import System, start_system

T = TypeVar("T")

TERMINAL = ("completed", "failed")


async def wait_healthy(port: int, timeout_s: float = 30.0) -> None:
    """Until the process listening on `port` answers /healthz with 200."""
    async def poll() -> None:
        async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)  # the process is starting: nothing to await but its port

    await asyncio.wait_for(poll(), timeout_s)


async def settled(api: str, job_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The job document once every provider is terminal in the projection."""
    async def poll() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=api, timeout=10, trust_env=False) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    r = await http.get(f"/jobs/{job_id}")
                    if r.status_code == 200 and all(p["call_status"] in TERMINAL for p in r.json()["providers"]):
                        return r.json()  # type: ignore[no-any-return]
                await asyncio.sleep(0.1)  # polling an HTTP read model: there is nothing to await

    return await asyncio.wait_for(poll(), timeout_s)


async def wait_job_completed(nc: Any, job_id: str, timeout: float) -> None:
    """Wait for JobCompleted on the log (it may already be there)."""
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        if isinstance(codec.decode(msg.data), ev.JobCompleted):
            done.set()

    sub = await nc.subscribe(subjects.job_event_filter("completed").replace("*", job_id), cb=on_msg)
    try:
        if not any(isinstance(e, ev.JobCompleted) for e in await bus.job_history(nc.jetstream(), job_id)):
            await asyncio.wait_for(done.wait(), timeout)
    finally:
        await sub.unsubscribe()


# POST /jobs answers 201 once the projection holds the job, or 202 (with a Location) when the projection is slower
# than the API's bounded wait, as on a loaded machine. Either way the job is on the log; tests that go on to wait
# for the job itself accept both, so none of them asserts how fast the projection is.
ACCEPTED = (201, 202)


@contextlib.asynccontextmanager
async def running_world(settings: Settings, personas: PersonaBook, nats_url: str,
                        **service_options: dict[str, object]) -> AsyncIterator[tuple[World, System]]:
    """Every service on the simulated world (the Twilio and xAI stand-ins playing `personas`), on `nats_url`; the
    extractor waits 1 s for the gateway's own result unless `extractor=` says otherwise. Stopped on the way out."""
    async with simulated_world(settings, personas=personas) as world:
        system = await start_system(world.settings, nats_url=nats_url,
                                    service_options={"extractor": {"gateway_grace_s": 1.0}, **service_options})
        try:
            yield world, system
        finally:
            await system.stop(5)


def job_body(job_id: str, personas: Iterable[Persona], ids: str | None = None, **extra: object) -> dict[str, Any]:
    """The POST /jobs body calling each persona; with `ids`, provider i gets the id f"{ids}{i}". `extra` adds
    fields or overrides the defaults (max_price, homeowner_phone...)."""
    providers = [{"service_provider": p.business, "phone_number": p.phone} for p in personas]
    if ids is not None:
        providers = [{"id": f"{ids}{i}", **p} for i, p in enumerate(providers)]
    return {"job_id": job_id, "problem": "leaking kitchen faucet", "zip_code": "94110", "max_price": 200,
            "providers": providers, **extra}


class JobWatch:
    """Every event of the given jobs published while the watch is open, in `seen`. It is a plain subscription: it
    sees what is published after it opens, so open it before the job is posted."""

    def __init__(self, nc: Any, *job_ids: str) -> None:
        self.seen: list[ev.Event] = []
        self._nc, self._job_ids = nc, job_ids
        self._changed = asyncio.Event()
        self._subs: list[Any] = []

    async def _on_msg(self, msg: Any) -> None:
        self.seen.append(codec.decode(msg.data))
        self._changed.set()

    async def __aenter__(self) -> JobWatch:
        try:
            for job_id in self._job_ids:
                self._subs.append(await self._nc.subscribe(subjects.job_filter(job_id), cb=self._on_msg))
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    async def wait_for(self, found: Callable[[], T | None], timeout_s: float) -> T:
        """What `found()` answers once it is not None, checked on every event, within `timeout_s`."""
        async def loop() -> T:
            while True:
                result = found()
                if result is not None:
                    return result
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(loop(), timeout_s)

    async def until(self, pred: Callable[[ev.Event], bool], timeout_s: float) -> ev.Event:
        """The first event seen for which `pred` holds (it may have come already), within `timeout_s`."""
        return await self.wait_for(lambda: next((e for e in self.seen if pred(e)), None), timeout_s)


async def kv_entries(js: Any, bucket: str) -> dict[str, bytes]:
    """Every live key of a KV bucket with its value. Listed from the bucket's stream state on the server:
    nats-py's `KeyValue.keys()` lists through a watcher that can report "no keys" before the replay of existing
    ones has reached it (nats-io/nats.py#842; seen once in a full suite)."""
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    kv = await js.key_value(bucket)
    entries: dict[str, bytes] = {}
    for subject in sorted(info.state.subjects or {}):
        value, _ = await bus.kv_read(kv, subject[len(prefix):])
        if value is not None:  # deleted or purged keys are not listed, as keys() did not list them
            entries[subject[len(prefix):]] = value
    return entries
