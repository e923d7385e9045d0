"""Bounded waits on a running system, shared by the test modules that start one: a service answering /healthz, a
job settled in the projection, JobCompleted on the log. The projection and /healthz are HTTP read models with
nothing to subscribe to, so those two poll (every 0.1 s, always under a timeout)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from haggle_contracts import codec, subjects
from haggle_contracts import events as ev

from haggle import bus

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
