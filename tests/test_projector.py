"""The projector on a real nats-server: exactly-once application, a SIGKILL mid-stream, rebuild, and a
JobStarted published by a plain nats-py script with no Haggle code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
from haggle_contracts import events as ev
from haggle_contracts import subjects
from haggle_projector.projector import Projector, rebuild
from haggle_projector.stores.sqlite_store import SqliteStore

from haggle import bus
from haggle.consumer import EventConsumer

REPO = Path(__file__).resolve().parents[1]

HAGGLE = str(Path(sys.executable).parent / "haggle")


def job(job_id: str, n: int = 2) -> ev.JobStarted:
    return ev.JobStarted(
        event_id=f"start-{job_id}",
        job_id=job_id,
        problem="leaking faucet",
        zip_code="94110",
        max_price=180,
        providers=[
            ev.ProviderSpec(id=f"{job_id}-p{i}", service_provider=f"Plumber {i}", phone_number=f"+1415555{i:04d}")
            for i in range(n)
        ],
    )


def conversation(job_id: str, provider_id: str, lines: int) -> list[ev.Event]:
    out: list[ev.Event] = [
        ev.DialScheduled(event_id=f"d-{provider_id}", job_id=job_id, provider_id=provider_id, attempt=1),
        ev.CallDialed(event_id=f"c-{provider_id}", job_id=job_id, provider_id=provider_id, attempt=1,
                      call_sid=f"CA{provider_id}", to="+14155550000"),
        ev.CallStatusChanged(event_id=f"s1-{provider_id}", job_id=job_id, provider_id=provider_id, attempt=1,
                             call_sid=f"CA{provider_id}", status="in-progress"),
    ]
    for i in range(lines):
        out.append(ev.UtteranceTranscribed(
            event_id=f"u-{provider_id}-{i}", job_id=job_id, provider_id=provider_id, attempt=1,
            call_sid=f"CA{provider_id}", utterance_id=f"item{i}", seq=i,
            role=ev.Role.USER if i % 2 == 0 else ev.Role.ASSISTANT, text=f"line {i}"))
    out.append(ev.CallEnded(event_id=f"e-{provider_id}", job_id=job_id, provider_id=provider_id, attempt=1,
                            call_sid=f"CA{provider_id}", reason="end_call", duration_s=42.0, utterances=lines))
    out.append(ev.PriceExtracted(event_id=f"x-{provider_id}", job_id=job_id, provider_id=provider_id, attempt=1,
                                 call_sid=f"CA{provider_id}", outcome=ev.Outcome.AGREED, agreed=True, price=150.0,
                                 initial_quote=200.0))
    return out


def rows(store_rows: list) -> list[dict]:  # type: ignore[type-arg]
    return [msgspec.to_builtins(r) for r in store_rows]


async def test_redelivered_events_are_applied_once(nc, tmp_path: Path) -> None:
    js = nc.jetstream()
    pub = bus.Publisher(js)
    await pub.publish(job("j1", 1))
    for e in conversation("j1", "j1-p0", 4):
        await pub.publish(e)
    store = SqliteStore(str(tmp_path / "p.db"))
    await store.open()
    projector = Projector(store)
    stored = [s async for s in bus.replay(js, subjects.job_filter("j1"))]
    for s in stored + stored:  # every event delivered twice
        assert s.event is not None
        await projector.apply(s.event, s.seq)
    [row] = await store.list_job("j1")
    assert [u.text for u in row.transcript] == ["line 0", "line 1", "line 2", "line 3"]
    assert row.call_status == "completed" and row.outcome == "agreed" and row.negotiated_price == 150.0
    assert row.call_transcript.splitlines() == [
        "Provider: line 0", "Agent: line 1", "Provider: line 2", "Agent: line 3"]
    await store.close()


async def _wait_rows(store: SqliteStore, job_id: str, predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    async def poll():  # type: ignore[no-untyped-def]
        while True:
            current = await store.list_job(job_id)
            if predicate(current):
                return current
            await asyncio.sleep(0.05)  # the projector runs in another process: we can only look at its output

    return await asyncio.wait_for(poll(), timeout)


@pytest.mark.slow
async def test_projector_killed_mid_stream_loses_and_duplicates_nothing(nc, nats_server, tmp_path: Path) -> None:
    """SIGKILL the projector process while events are still arriving; a restarted one finishes the job."""
    js = nc.jetstream()
    pub = bus.Publisher(js)
    n_providers, lines = 6, 150
    await pub.publish(job("jk", n_providers))
    db = tmp_path / "live.db"
    env = {**os.environ, "NATS_URL": nats_server.url, "PROJECTION_URL": f"sqlite:///{db}", "PORT": "0",
           "HAGGLE_DATA_DIR": str(tmp_path / "data")}
    store = SqliteStore(str(db))
    proc = subprocess.Popen([HAGGLE, "run", "projector"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def publish_all() -> None:
        streams = [conversation("jk", f"jk-p{i}", lines) for i in range(n_providers)]
        for step in range(max(len(s) for s in streams)):
            for s in streams:
                if step < len(s):
                    await pub.publish(s[step])
            await asyncio.sleep(0.005)  # a live call's pace, so the kill lands while events still arrive

    await store.open()
    await _wait_rows(store, "jk", lambda rs: len(rs) == n_providers)  # the projector is up and consuming
    publishing = asyncio.create_task(publish_all())
    try:
        await _wait_rows(store, "jk", lambda rs: sum(len(r.transcript) for r in rs) >= 60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        partial = sum(len(r.transcript) for r in await store.list_job("jk"))
        assert not publishing.done(), "the stream was complete before the kill: nothing was tested"
        proc = subprocess.Popen([HAGGLE, "run", "projector"], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.wait_for(publishing, 60)
        final = await _wait_rows(store, "jk", lambda rs: all(r.call_status == "completed" for r in rs)
                                 and all(len(r.transcript) == lines for r in rs), timeout=60)
    finally:
        publishing.cancel()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert partial < n_providers * lines
    for r in final:
        assert [u.seq for u in r.transcript] == list(range(lines))
        assert r.attempts == 1 and r.negotiated_price == 150.0
    # The rebuild from the log gives identical rows.
    rebuilt_store = SqliteStore(str(tmp_path / "rebuilt.db"))
    await rebuilt_store.open()
    count = await rebuild(js, rebuilt_store)
    assert count == 1 + n_providers * (lines + 5)
    assert rows(await rebuilt_store.list_job("jk")) == rows(final)
    await rebuilt_store.close()
    await store.close()


async def test_rebuild_cli_matches_live_projection(nc, nats_server, tmp_path: Path) -> None:
    js = nc.jetstream()
    pub = bus.Publisher(js)
    await pub.publish(job("jr", 2))
    for e in conversation("jr", "jr-p0", 3):
        await pub.publish(e)
    live = SqliteStore(str(tmp_path / "live.db"))
    await live.open()
    consumer = EventConsumer(js, subjects.CONSUMERS["projector"], Projector(live).handle, ordered=True)
    task = asyncio.create_task(consumer.run())
    try:
        await _wait_rows(live, "jr", lambda rs: len(rs) == 2 and any(r.call_status == "completed" for r in rs))
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
    env = {**os.environ, "NATS_URL": nats_server.url, "PROJECTION_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    out = await asyncio.to_thread(subprocess.run, [HAGGLE, "projector", "rebuild"], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "rebuilt the projection from 9 event(s)" in out.stdout
    cli = SqliteStore(str(tmp_path / "cli.db"))
    await cli.open()
    assert rows(await cli.list_job("jr")) == rows(await live.list_job("jr"))
    await cli.close()
    await live.close()


PLAIN_PUBLISHER = textwrap.dedent("""
    import asyncio, json, sys
    import nats

    async def main(url):
        nc = await nats.connect(url)
        js = nc.jetstream()
        body = {"type": "JobStarted", "v": 1, "event_id": "external-1", "job_id": "ext1",
                "occurred_at": "2026-11-24T10:00:00Z", "problem": "locked out", "zip_code": "10001",
                "max_price": 250, "source": "crm",
                "providers": [{"id": "ext1-a", "service_provider": "Ace Locks", "phone_number": "+12125550111"}]}
        ack = await js.publish("haggle.job.ext1.started", json.dumps(body).encode(),
                               headers={"Nats-Msg-Id": body["event_id"]})
        print(ack.seq)
        await nc.close()

    asyncio.run(main(sys.argv[1]))
""")


async def test_job_started_from_a_plain_nats_script_is_projected(nc, nats_server, tmp_path: Path) -> None:
    js = nc.jetstream()
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", PLAIN_PUBLISHER, nats_server.url],
                                  capture_output=True, text=True, timeout=30, cwd=REPO)
    assert out.returncode == 0, out.stderr
    store = SqliteStore(str(tmp_path / "p.db"))
    await store.open()
    consumer = EventConsumer(js, subjects.CONSUMERS["projector"], Projector(store).handle, ordered=True)
    task = asyncio.create_task(consumer.run())
    try:
        [row] = await _wait_rows(store, "ext1", lambda rs: len(rs) == 1)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
    assert (row.service_provider, row.phone_number, row.call_status, row.max_price) == (
        "Ace Locks", "+12125550111", "queued", 250.0)
    await store.close()


async def test_replay_cli_prints_events_in_order(nc, nats_server, tmp_path: Path) -> None:
    js = nc.jetstream()
    pub = bus.Publisher(js)
    await pub.publish(job("ja", 1))
    for e in conversation("ja", "ja-p0", 2):
        await pub.publish(e)
    env = {**os.environ, "NATS_URL": nats_server.url}
    out = await asyncio.to_thread(subprocess.run, [HAGGLE, "events", "replay", "--job", "ja", "--json"], env=env,
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    types = [json.loads(line)["event"]["type"] for line in out.stdout.splitlines()]
    assert types == ["JobStarted", "DialScheduled", "CallDialed", "CallStatusChanged", "UtteranceTranscribed",
                     "UtteranceTranscribed", "CallEnded", "PriceExtracted"]
    human = await asyncio.to_thread(subprocess.run, [HAGGLE, "events", "replay", "--job", "ja"], env=env,
                                    capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "#1 assistant: line 1" in human.stdout
