"""Dispatcher operations against the Twilio stand-in on a real nats-server: caps and pacing across two
dispatcher processes, retries by outcome, idempotent starts, and recovery from SIGKILL."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from haggle_contracts import events as ev
from haggle_contracts import subjects
from haggle_dispatcher.limits import PACE_KEY
from haggle_sim.personas import Persona, PersonaBook, Turn, negotiation
from haggle_sim.realtime_standin import RealtimeStandin
from haggle_sim.twilio_standin import TwilioStandin
from waits import ACCEPTED, job_body, running_world, settled, wait_healthy, wait_job_completed

from haggle import bus
from haggle.config import Settings
from haggle.nats_embedded import free_port
from haggle.simulate import SIM_ACCOUNT_SID, SIM_AUTH_TOKEN, SIM_FROM, SIM_XAI_KEY
from haggle.system import start_system

HAGGLE = str(Path(sys.executable).parent / "haggle")


def numbered(n: int, answer: str, ring_ms: int, start: int = 0) -> list[Persona]:
    return [Persona(business=f"Provider {i}", phone=f"+1415556{i:04d}", answer=answer, ring_ms=ring_ms)  # type: ignore[arg-type]
            for i in range(start, start + n)]


def sim_env(nats_url: str, twilio: TwilioStandin, realtime: RealtimeStandin, public: str, **extra: str) -> dict:  # type: ignore[type-arg]
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "XAI_", "SUPABASE_", "PROJECTION"))}
    return {**keep, "NATS_URL": nats_url, "TWILIO_ACCOUNT_SID": SIM_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": SIM_AUTH_TOKEN,
            "TWILIO_PHONE_NUMBER": SIM_FROM, "TWILIO_API_BASE_URL": twilio.base_url, "XAI_API_KEY": SIM_XAI_KEY,
            "XAI_REALTIME_URL": realtime.url, "PUBLIC_BASE_URL": public, "CALLING_HOURS": "any",
            "NEGOTIATION_STRATEGY": "independent", **extra}


@asynccontextmanager
async def standins(personas: list[Persona]) -> AsyncIterator[tuple[TwilioStandin, RealtimeStandin]]:
    book = PersonaBook(personas)
    async with TwilioStandin(book, SIM_ACCOUNT_SID, SIM_AUTH_TOKEN) as twilio, \
            RealtimeStandin(book, api_key=SIM_XAI_KEY) as realtime:
        yield twilio, realtime


@pytest.mark.slow
async def test_cap_and_pacing_hold_across_two_dispatcher_processes(nc, nats_server, tmp_path: Path) -> None:
    # 24 calls ringing 2.6 s, at most 5 live: the cap binds (5 / 2.6 s is about the 2/s pacing) and the whole job
    # still takes 11.5 s or more, long enough that a pacing each process kept for itself would show.
    personas = numbered(24, "no-answer", ring_ms=2600)
    async with standins(personas) as (twilio, realtime):
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        settings = Settings(data_dir=tmp_path, negotiation_strategy="independent",
                            projection_url=f"sqlite:///{tmp_path / 'p.db'}", port=port,
                            public_base_url=public, twilio_account_sid=SIM_ACCOUNT_SID,
                            twilio_auth_token=SIM_AUTH_TOKEN, xai_api_key=SIM_XAI_KEY,
                            twilio_api_base_url=twilio.base_url, xai_realtime_url=realtime.url)
        system = await start_system(settings, ["projector", "media-gateway", "extractor"], nats_url=nats_server.url)
        # Every turn either replica takes moves the shared `pace` key on: its value is that turn's start plus the
        # interval. A watch sees each stored revision (a plain subscription would also see the compare-and-set
        # writes the server refused).
        paces: list[float] = []
        pace_watch = await (await nc.jetstream().key_value(subjects.KV_LIMITS)).watch(PACE_KEY)

        async def watch_paces() -> None:
            async for entry in pace_watch:
                if entry is not None and entry.value:
                    paces.append(float(entry.value.decode()))

        watching = asyncio.create_task(watch_paces())
        env = sim_env(nats_server.url, twilio, realtime, public, MAX_CONCURRENT_CALLS="5", CALLS_PER_SECOND="2",
                      MAX_CALL_ATTEMPTS="1", PORT="0")
        dispatchers = [subprocess.Popen([HAGGLE, "run", "dispatcher"], env=env, cwd=tmp_path,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        try:
            async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
                assert (await http.post("/jobs", json=job_body("caps", personas))).status_code in ACCEPTED
            await wait_job_completed(nc, "caps", timeout=120)
            doc = await settled(system.base_url, "caps", timeout_s=20)
        finally:
            for d in dispatchers:
                d.send_signal(signal.SIGTERM)
            for d in dispatchers:
                d.wait(timeout=20)
            await system.stop(5)
            watching.cancel()
            await pace_watch.stop()
        stats = twilio.stats
        per_number = Counter(c.params["To"][0] for c in twilio.calls)
    assert len(per_number) == 24 and set(per_number.values()) == {1}
    assert 4 <= stats.max_live <= 5, stats.max_live  # the cap held, and it was actually reached
    # Pacing at 2/s shared by both processes, where it is decided: the 24 turns, whichever replica took each, start
    # at least one interval (1.1 / 2 s) apart. (Pacing each process kept for itself would start two turns at once.)
    assert len(paces) == 24
    assert min(b - a for a, b in itertools.pairwise(paces)) >= 0.55 - 1e-6, paces
    # And where Twilio counts, never faster on average. (Requests are not counted per second there: under a loaded
    # machine a REST request can land late, close to the next one, without any turn having come early.)
    created = sorted(stats.created_at)
    assert created[-1] - created[0] >= (len(created) - 1) / 2.0
    assert {(p["call_status"], p["outcome"]) for p in doc["providers"]} == {("failed", "no_answer")}
    history = await bus.job_history(nc.jetstream(), "caps")
    assert sum(isinstance(e, ev.CallDialed) for e in history) == 24


@pytest.mark.slow
async def test_retries_by_outcome(nc, nats_server, tmp_path: Path) -> None:
    voicemail = Persona(business="Voicemail Plumbing", phone="+14155557003", answer="voicemail",
                        turns=(Turn("provider", "You have reached Voicemail Plumbing, please leave a message."),),
                        ms_per_char=15)
    personas = [
        Persona(business="Busy Bee Plumbing", phone="+14155557001", answer="busy", ring_ms=100),
        Persona(business="Nobody Home Plumbing", phone="+14155557002", answer="no-answer", ring_ms=300),
        voicemail,
        Persona(business="Wrong Number Plumbing", phone="+14155557004", answer="invalid-number"),
        negotiation("Deal Plumbing", "+14155557005", first_quote=200, counter=150, final=175, ms_per_char=10),
    ]
    settings = Settings(data_dir=tmp_path, negotiation_strategy="independent",
                        projection_url=f"sqlite:///{tmp_path / 'r.db'}", port=0,
                        max_call_attempts=3, retry_delay_s=0.3, calling_hours=None)
    async with running_world(settings, PersonaBook(personas), nats_server.url) as (world, system):
        async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
            assert (await http.post("/jobs", json=job_body("retry", personas))).status_code in ACCEPTED
        await wait_job_completed(nc, "retry", timeout=90)
        doc = await settled(system.base_url, "retry", timeout_s=20)
    calls = Counter(c.params["To"][0] for c in world.twilio.calls)  # type: ignore[attr-defined]
    voicemail_calls = [c for c in world.twilio.calls if c.params["To"][0] == voicemail.phone]  # type: ignore[attr-defined]
    rows = {p["service_provider"]: p for p in doc["providers"]}
    assert calls == {"+14155557001": 3, "+14155557002": 3, "+14155557003": 3, "+14155557005": 1}
    assert (rows["Busy Bee Plumbing"]["call_status"], rows["Busy Bee Plumbing"]["outcome"],
            rows["Busy Bee Plumbing"]["attempts"]) == ("failed", "busy", 3)
    assert (rows["Nobody Home Plumbing"]["outcome"], rows["Nobody Home Plumbing"]["attempts"]) == ("no_answer", 3)
    assert (rows["Voicemail Plumbing"]["outcome"], rows["Voicemail Plumbing"]["attempts"]) == ("voicemail", 3)
    wrong = rows["Wrong Number Plumbing"]
    assert (wrong["call_status"], wrong["outcome"], wrong["attempts"]) == ("failed", "failed", 1)
    assert "not a valid phone number" in (wrong["failure_reason"] or "")
    assert (rows["Deal Plumbing"]["call_status"], rows["Deal Plumbing"]["negotiated_price"]) == ("completed", 175)
    # Voicemail: hung up without leaving a message, well before the greeting would have let us talk long.
    for call in voicemail_calls:
        assert call.end_reason == "hangup-rest-completed", call.end_reason
        assert call.agent_bytes_received < 8 * 1000  # under a second of agent audio reached the line
    history = await bus.job_history(nc.jetstream(), "retry")
    retries = [e for e in history if isinstance(e, ev.DialScheduled) and e.attempt > 1]
    assert sorted((e.reason, e.attempt) for e in retries) == sorted(
        [("busy", 2), ("busy", 3), ("no_answer", 2), ("no_answer", 3), ("voicemail", 2), ("voicemail", 3)])
    for e in retries:  # scheduled in the future, doubling: 0.3 s after the first try, 0.6 s after the second
        assert e.not_before is not None and e.not_before > e.occurred_at


async def test_repeated_starts_dial_nobody_twice(nc, nats_server, tmp_path: Path) -> None:
    personas = numbered(3, "busy", ring_ms=100, start=100)
    settings = Settings(data_dir=tmp_path, negotiation_strategy="independent",
                        projection_url=f"sqlite:///{tmp_path / 'i.db'}", port=0,
                        max_call_attempts=1, calling_hours=None)
    async with running_world(settings, PersonaBook(personas), nats_server.url, extractor={}) as (world, system):
        async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
            assert (await http.post("/jobs", json=job_body("twice", personas))).status_code in ACCEPTED
            await settled(system.base_url, "twice", timeout_s=20)
            assert (await http.post("/start-job/twice")).json() == {"status": "started", "count": 3}
        # A third start straight on the bus, as another system would publish it.
        [first] = [e for e in await bus.job_history(nc.jetstream(), "twice") if isinstance(e, ev.JobStarted)][:1]
        import msgspec

        await bus.Publisher(nc.jetstream()).publish(msgspec.structs.replace(first, event_id="from-elsewhere"))
        await wait_job_completed(nc, "twice", timeout=30)
        # Every start has been handled by the dispatcher once its consumer is drained.
        js = nc.jetstream()

        async def drained() -> None:
            while (await js.consumer_info(subjects.STREAM, "dispatcher-jobs")).num_ack_pending or \
                    (await js.consumer_info(subjects.STREAM, "dispatcher-jobs")).num_pending:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(drained(), 20)
        await asyncio.wait_for(drained_dials(js), 20)
    calls = Counter(c.params["To"][0] for c in world.twilio.calls)  # type: ignore[attr-defined]
    assert sorted(calls.values()) == [1, 1, 1]
    history = await bus.job_history(nc.jetstream(), "twice")
    assert sum(isinstance(e, ev.JobStarted) for e in history) == 3
    assert sum(isinstance(e, ev.DialScheduled) for e in history) == 3


async def drained_dials(js) -> None:  # type: ignore[no-untyped-def]
    while True:
        info = await js.consumer_info(subjects.STREAM, "dispatcher-dials")
        if not info.num_pending and not info.num_ack_pending:
            return
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_sigkill_mid_job_dials_everyone_once_and_reconciles_live_calls(nc, nats_server, tmp_path: Path) -> None:
    personas = numbered(50, "no-answer", ring_ms=1500, start=200)
    async with standins(personas) as (twilio, realtime):
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = sim_env(nats_server.url, twilio, realtime, public, PORT=str(port), MAX_CONCURRENT_CALLS="10",
                      CALLS_PER_SECOND="8", MAX_CALL_ATTEMPTS="1", HAGGLE_DATA_DIR=str(tmp_path / "data"),
                      PROJECTION_URL=f"sqlite:///{tmp_path / 'k.db'}")

        def up() -> subprocess.Popen[bytes]:
            return subprocess.Popen([HAGGLE, "up"], env=env, cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        proc = up()
        try:
            async with httpx.AsyncClient(base_url=public, timeout=10) as http:
                await wait_healthy(port, 30)
                assert (await http.post("/jobs", json=job_body("kill", personas))).status_code in ACCEPTED
                while len(twilio.calls) < 20:
                    await twilio.wait_for_call(timeout=30)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                orphaned = [c for c in twilio.calls if c.ended_at is None]
                assert orphaned, "no call was live at the kill: the outage tested nothing"
                for c in orphaned:  # their final status callbacks go nowhere while we are down
                    await twilio.wait_for_call_end(c.sid, timeout=30)
                proc = up()
                await wait_healthy(port, 30)
                await wait_job_completed(nc, "kill", timeout=120)
                doc = await settled(public, "kill", timeout_s=20)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        per_number = Counter(c.params["To"][0] for c in twilio.calls)
    assert len(per_number) == 50 and set(per_number.values()) == {1}
    assert {p["call_status"] for p in doc["providers"]} == {"failed"}
    assert {p["outcome"] for p in doc["providers"]} == {"no_answer"}
    history = await bus.job_history(nc.jetstream(), "kill")
    if os.environ.get("HAGGLE_TIMELINE"):
        t0 = history[0].occurred_at
        for e in history:
            print(f"{(e.occurred_at - t0).total_seconds():7.2f} {type(e).__name__} {getattr(e, 'provider_id', '')}"
                  f" {getattr(e, 'status', '')} {getattr(e, 'source', '')}")
    reconciled = {e.call_sid for e in history if isinstance(e, ev.CallStatusChanged) and e.source == "reconcile"}
    assert {c.sid for c in orphaned} <= reconciled | {
        e.call_sid for e in history if isinstance(e, ev.CallStatusChanged) and e.status == "no-answer"}
    assert reconciled, "live calls of the outage were not reconciled from Twilio"
    assert sum(isinstance(e, ev.CallDialed) for e in history) == 50


@pytest.mark.slow
async def test_cancel_stops_queued_dials_and_lets_live_calls_finish(nc, nats_server, tmp_path: Path) -> None:
    personas = [negotiation(f"Cancel Plumber {i}", f"+1415559{i:04d}", first_quote=200, counter=150, final=175,
                            ms_per_char=10) for i in range(6)]
    settings = Settings(data_dir=tmp_path, negotiation_strategy="independent",
                        projection_url=f"sqlite:///{tmp_path / 'c.db'}", port=0,
                        max_concurrent_calls=2, calls_per_second=5, max_call_attempts=1, calling_hours=None)
    async with running_world(settings, PersonaBook(personas), nats_server.url) as (world, system):
        async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
            assert (await http.post("/jobs", json=job_body("cancel", personas))).status_code in ACCEPTED
            first = await world.twilio.wait_for_call(timeout=20)  # type: ignore[attr-defined]
            assert (await http.post("/jobs/cancel/cancel")).json()["status"] == "cancelling"
            assert (await http.post("/jobs/nope/cancel")).status_code == 404
            await wait_job_completed(nc, "cancel", timeout=60)
            doc = await settled(system.base_url, "cancel", timeout_s=20)
    dialed = {c.params["To"][0] for c in world.twilio.calls}  # type: ignore[attr-defined]
    assert first.params["To"][0] in dialed and 1 <= len(dialed) <= 2  # only what was live at the cancel
    rows = doc["providers"]
    live = [p for p in rows if p["phone_number"] in dialed]
    assert all(p["outcome"] == "agreed" and p["negotiated_price"] == 175 for p in live)  # they finished
    rest = [p for p in rows if p["phone_number"] not in dialed]
    assert len(rest) >= 4 and all((p["call_status"], p["outcome"]) == ("failed", "cancelled") for p in rest)
