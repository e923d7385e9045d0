"""The operator API over real HTTP, backed by a real nats-server and the SQLite projection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from haggle_contracts import events as ev

from haggle import bus
from haggle.config import Settings
from haggle.system import System, start_system


async def wait_for_job(http: httpx.AsyncClient, job_id: str, predicate, timeout: float = 15.0) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Poll the API until the projection satisfies `predicate` (the projector runs asynchronously)."""

    async def poll() -> dict:  # type: ignore[type-arg]
        while True:
            r = await http.get(f"/jobs/{job_id}")
            if r.status_code == 200 and predicate(r.json()):
                return r.json()
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def api(nc, nats_server, tmp_path: Path) -> AsyncIterator[tuple[System, httpx.AsyncClient]]:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'api.db'}", port=0,
                        api_key="s3cret-key")
    system = await start_system(settings, ["projector"], nats_url=nats_server.url, port=0)
    async with httpx.AsyncClient(base_url=system.base_url, timeout=10,
                                 headers={"Authorization": "Bearer s3cret-key"}) as http:
        yield system, http
    await system.stop(5)


async def test_idle_connections_outlive_the_clients_pools(api) -> None:
    """The server keeps an idle keep-alive connection longer than clients keep it in their pools, so a request
    never meets a connection the server is closing at that moment (it failed a test as httpx.ReadError)."""
    system, _ = api
    assert system.server.config.timeout_keep_alive > max(httpx.Limits().keepalive_expiry or 0, 60)


JOB = {
    "problem": "Kitchen faucet leaks",
    "zip_code": "94110",
    "max_price": 180,
    "context_answers": "Single handle",
    "providers": [
        {"service_provider": "Joe's Plumbing", "phone_number": "+14155550101"},
        {"service_provider": "Bay Pipe Pros", "phone_number": "+1 (415) 555-0102", "max_price": 200},
    ],
}


async def test_post_jobs_publishes_job_started_and_projects_queued_rows(api, nc) -> None:
    _, http = api
    r = await http.post("/jobs", json=JOB)
    assert r.status_code == 201, r.text
    body = r.json()
    job_id = body["job_id"]
    assert [p["service_provider"] for p in body["providers"]] == ["Joe's Plumbing", "Bay Pipe Pros"]
    assert all(p["id"] for p in body["providers"])
    [started] = await bus.job_history(nc.jetstream(), job_id)
    assert isinstance(started, ev.JobStarted)
    assert started.providers[1].phone_number == "+14155550102" and started.providers[1].max_price == 200
    doc = await wait_for_job(http, job_id, lambda d: len(d["providers"]) == 2)
    assert [p["call_status"] for p in doc["providers"]] == ["queued", "queued"]
    assert doc["best_offer"] is None
    first = doc["providers"][0]
    for key in ("id", "service_provider", "phone_number", "call_status", "outcome", "negotiated_price",
                "call_transcript", "transcript"):
        assert key in first
    assert first["transcript"] == [] and first["call_transcript"] == ""

    # Seed-compatible start of the same job: published again, but nobody is dialed twice (dispatcher's job).
    r = await http.post(f"/start-job/{job_id}")
    assert r.json() == {"status": "started", "count": 2}
    assert (await http.post("/start-job/nope")).status_code == 404


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"max_price": -5}, "max_price"),
        ({"max_price": 0}, "max_price"),
        ({"providers": []}, "providers"),
        ({"providers": [{"service_provider": "X", "phone_number": "555-1234"}]}, "E.164"),
        ({"providers": [{"phone_number": "+14155550101"}]}, "service_provider"),
        ({"problem": ""}, "problem"),
        ({"job_id": "bad id with spaces"}, "job_id"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_input_is_422_and_publishes_nothing(api, nc, patch: dict, needle: str) -> None:  # type: ignore[type-arg]
    _, http = api
    body = {**JOB, **patch}
    for key in [k for k, v in patch.items() if v is None]:
        body.pop(key)
    r = await http.post("/jobs", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.text
    info = await nc.jetstream().stream_info("HAGGLE")
    assert info.state.messages == 0


async def test_missing_field_is_422(api) -> None:
    _, http = api
    body = dict(JOB)
    del body["zip_code"]
    r = await http.post("/jobs", json=body)
    assert r.status_code == 422 and "zip_code" in r.text


async def test_api_key_is_required_when_set(api) -> None:
    system, _ = api
    async with httpx.AsyncClient(base_url=system.base_url) as anon:
        assert (await anon.post("/jobs", json=JOB)).status_code == 401
        assert (await anon.get("/jobs/x")).status_code == 401
        assert (await anon.get("/jobs/x", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await anon.get("/healthz")).status_code == 200


async def test_duplicate_job_id_is_409(api) -> None:
    _, http = api
    r = await http.post("/jobs", json={**JOB, "job_id": "fixed_1"})
    assert r.status_code == 201
    await wait_for_job(http, "fixed_1", lambda d: len(d["providers"]) == 2)
    assert (await http.post("/jobs", json={**JOB, "job_id": "fixed_1"})).status_code == 409
