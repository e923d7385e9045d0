"""Integrity of the log and the projection, with real parts (nats-server, HTTP, SQLite and PostgreSQL, the
dispatcher against the Twilio stand-in): one rule for text at every edge, the subject must match the body, a
store refusal never stalls the projection, one transaction per event, duplicate ids refused from the log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import psycopg
import pytest
from haggle_contracts import events as ev
from haggle_contracts import subjects
from haggle_sim.personas import Persona, PersonaBook
from waits import settled

from haggle import bus
from haggle.config import Settings
from haggle.simulate import simulated_world
from haggle.system import System, start_system

KEY = "integrity-key"


def job_body(**extra: object) -> dict:  # type: ignore[type-arg]
    return {"problem": "Kitchen faucet leaks", "zip_code": "94110", "max_price": 180,
            "providers": [{"service_provider": f"Plumber {i}", "phone_number": f"+1415555{i:04d}"} for i in range(3)],
            **extra}


def raw_job_started(job_id: str, *, name: str = "Plumber", phone: str = "+14155550199") -> dict:  # type: ignore[type-arg]
    return {"type": "JobStarted", "v": 1, "event_id": f"raw-{job_id}-{name.encode().hex()[:16]}", "job_id": job_id,
            "problem": "leak", "zip_code": "94110", "max_price": 100,
            "providers": [{"id": f"{job_id}-p0", "service_provider": name, "phone_number": phone}]}


async def dead_letters(js, consumer: str) -> list[ev.DeadLetter]:  # type: ignore[no-untyped-def]
    return [msgspec.json.decode(s.raw, type=ev.DeadLetter)
            async for s in bus.replay(js, subjects.deadletter_subject(consumer))]


async def until(check, timeout_s: float = 20.0):  # type: ignore[no-untyped-def]
    """Poll an async check (a read model over HTTP or a consumer's state: nothing to subscribe to)."""
    async def poll():  # type: ignore[no-untyped-def]
        while True:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout_s)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def projection_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'p.db'}"
    url: str = request.getfixturevalue("pg_database")  # this test's own database: `public.providers` from nothing
    return url


@pytest.fixture
async def system(nc, nats_server, tmp_path: Path, projection_url: str) -> AsyncIterator[System]:
    settings = Settings(data_dir=tmp_path, projection_url=projection_url, port=0, api_key=KEY)
    running = await start_system(settings, ["projector"], nats_url=nats_server.url, port=0)
    yield running
    await running.stop(5)


def client(system: System) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=system.base_url, timeout=15, trust_env=False,
                             headers={"Authorization": f"Bearer {KEY}"})


async def test_nul_byte_job_is_refused_everywhere_and_the_next_job_is_projected(system: System, nc) -> None:
    js = nc.jetstream()
    async with client(system) as http:
        refused = await http.post("/jobs", json=job_body(problem="leak\x00"))
        assert refused.status_code == 422 and "U+0000" in refused.text
        # Another system publishes the same straight on the log: dead-lettered, never projected.
        nul = raw_job_started("nuljob", name="Bad\x00Name")
        await js.publish("haggle.job.nuljob.started", json.dumps(nul).encode())
        r = await http.post("/jobs", json=job_body())
        assert r.status_code == 201, r.text  # answered once projected
        doc = (await http.get(f"/jobs/{r.json()['job_id']}")).json()
        assert len(doc["providers"]) == 3
        assert (await http.get("/jobs/nuljob")).status_code == 404
    [letter] = await dead_letters(js, "projector")
    assert "U+0000" in letter.reason and letter.subject == "haggle.job.nuljob.started"


async def test_a_store_refusal_marks_projection_error_and_the_projection_moves_on(
        system: System, nc, projection_url: str, tmp_path: Path) -> None:
    """A refusal retrying cannot fix (here a real constraint in the store) is quarantined, not retried forever."""
    from haggle_projector.projector import PROJECTION_ERRORS, rebuild
    from haggle_projector.stores import open_store

    if projection_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(projection_url.removeprefix("sqlite:///")) as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON providers WHEN NEW.service_provider = 'Refused'"
                         " AND NEW.call_status <> 'projection_error' BEGIN SELECT RAISE(ABORT, 'refused'); END")
    else:
        with psycopg.connect(projection_url, autocommit=True) as conn:
            conn.execute("alter table providers add constraint refuse"
                         " check (service_provider <> 'Refused' or call_status = 'projection_error')")
    before = PROJECTION_ERRORS._value.get()
    js = nc.jetstream()
    async with client(system) as http:
        body = job_body(job_id="refused-job")
        body["providers"][1]["service_provider"] = "Refused"
        r = await http.post("/jobs", json=body)
        assert r.status_code in (201, 202), r.text
        later = await http.post("/jobs", json=job_body(job_id="later-job"))
        assert later.status_code == 201, later.text
        doc = (await http.get("/jobs/refused-job")).json()
        assert doc["status"] == "projection_error"
        statuses = [p["call_status"] for p in doc["providers"]]
        assert sorted(statuses) == ["projection_error", "queued", "queued"]
        marked = next(p for p in doc["providers"] if p["call_status"] == "projection_error")
        assert "refused" in marked["failure_reason"].lower()
        health = (await http.get("/healthz")).json()
        assert health["projection_errors"] == 1 and "JobStarted" in health["last_projection_error"]["reason"]
        metrics = (await http.get("/metrics")).text
        assert "haggle_projection_errors_total" in metrics
    assert PROJECTION_ERRORS._value.get() == before + 1
    [letter] = await dead_letters(js, "projector")
    assert "refused" in letter.reason.lower()
    # A rebuild meets the same refusal and gives the same rows.
    store = open_store(projection_url)
    await store.open()
    try:
        live = [msgspec.to_builtins(r) for r in await store.list_job("refused-job")]
        await rebuild(js, store)
        assert [msgspec.to_builtins(r) for r in await store.list_job("refused-job")] == live
    finally:
        await store.close()


async def test_twenty_post_then_get_pairs_are_all_complete(system: System) -> None:
    async with client(system) as http:
        for i in range(20):
            r = await http.post("/jobs", json=job_body())
            assert r.status_code in (201, 202), r.text
            if r.status_code == 202:  # the projection was slower than the bounded wait: follow the Location
                location = r.headers["location"]
                await until(lambda loc=location: _has_providers(http, loc, 3))
            doc = (await http.get(f"/jobs/{r.json()['job_id']}")).json()
            assert len(doc["providers"]) == 3, (i, doc)


async def _has_providers(http: httpx.AsyncClient, location: str, n: int) -> bool:
    r = await http.get(location)
    return r.status_code == 200 and len(r.json()["providers"]) == n


async def test_duplicate_ids_are_refused_from_the_log_even_when_posted_together(system: System) -> None:
    async with client(system) as http:
        same_job = await asyncio.gather(*(http.post("/jobs", json=job_body(job_id="twin")) for _ in range(4)))
        assert sorted(r.status_code for r in same_job)[:1] in ([201], [202])
        assert sum(r.status_code == 409 for r in same_job) == 3
        bodies = []
        for n in range(4):
            body = job_body(job_id=f"ptwin{n}")
            body["providers"][0]["id"] = "shared-provider"
            bodies.append(body)
        same_provider = await asyncio.gather(*(http.post("/jobs", json=b) for b in bodies))
        assert sum(r.status_code in (201, 202) for r in same_provider) == 1
        assert sum(r.status_code == 409 for r in same_provider) == 3


async def test_start_job_keeps_every_field_of_the_job(system: System, nc) -> None:
    async with client(system) as http:
        body = job_body(job_id="keep", max_attempts=5)
        body["providers"][0]["timezone"] = "America/Denver"
        assert (await http.post("/jobs", json=body)).status_code == 201
        assert (await http.post("/start-job/keep")).status_code == 200
    starts = [e for e in await bus.job_history(nc.jetstream(), "keep") if isinstance(e, ev.JobStarted)]
    assert len(starts) == 2
    first, again = starts
    assert again.source == "start-job" and again.max_attempts == 5
    assert again.providers == first.providers
    assert (again.problem, again.zip_code, again.max_price) == (first.problem, first.zip_code, first.max_price)


async def test_a_job_started_on_the_wrong_subject_dials_nobody(nc, nats_server, tmp_path: Path) -> None:
    """JobStarted for job B on job A's subject: every consumer dead-letters it; B's provider is not dialled."""
    victim = Persona(business="Victim", phone="+14155557001", answer="busy", ring_ms=100)  # type: ignore[arg-type]
    real = Persona(business="Real", phone="+14155557002", answer="busy", ring_ms=100)  # type: ignore[arg-type]
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'w.db'}", port=0,
                        max_call_attempts=1, calling_hours=None)
    js = nc.jetstream()
    async with simulated_world(settings, personas=PersonaBook([victim, real])) as world:
        system = await start_system(world.settings, nats_url=nats_server.url)
        try:
            body = raw_job_started("job-b", name="Victim", phone=victim.phone)
            await js.publish("haggle.job.job-a.started", json.dumps(body).encode())
            async with httpx.AsyncClient(base_url=system.base_url, timeout=10, trust_env=False) as http:
                r = await http.post("/jobs", json={"job_id": "after", "problem": "leak", "zip_code": "94110",
                                                   "max_price": 100, "providers": [
                                                       {"service_provider": "Real", "phone_number": real.phone}]})
                assert r.status_code == 201, r.text
            await settled(system.base_url, "after", timeout_s=30)  # the dispatcher went past the bad event
            letters = await dead_letters(js, "dispatcher-jobs")
            assert [letter.subject for letter in letters] == ["haggle.job.job-a.started"]
            assert "does not match" in letters[0].reason
        finally:
            await system.stop(5)
        dialled = [c.params["To"][0] for c in world.twilio.calls]  # type: ignore[attr-defined]
    assert dialled == [real.phone]
    assert not [e async for e in bus.replay(js, subjects.job_filter("job-b"))]


async def test_our_own_producers_store_text_fitted_to_the_rule(nc) -> None:
    """A transcript line with a form feed (outside text a speech model produced) is stored readable by every
    consumer instead of being dead-lettered by all of them."""
    js = nc.jetstream()
    line = ev.UtteranceTranscribed(event_id="u-ff", job_id="fit", provider_id="fit-p", attempt=1, call_sid="CA1",
                                   utterance_id="i1", seq=0, role=ev.Role.USER, text="two\x0chundred")
    await bus.Publisher(js).publish(line)
    [stored] = [s async for s in bus.replay(js, subjects.job_filter("fit"))]
    assert stored.error is None and isinstance(stored.event, ev.UtteranceTranscribed)
    assert stored.event.text == "two\ufffdhundred" and stored.event.event_id == "u-ff"
