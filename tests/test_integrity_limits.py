"""Limits and lifetimes on real parts: a consumer dead-letters after max-deliver, KV entries expire, NATS
unreachable at start fails with one masked line, and a projection store that is down does not stop the service."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest
from haggle_contracts import events as ev
from haggle_contracts import subjects
from nats.js.errors import KeyNotFoundError

from haggle import bus
from haggle.config import Settings
from haggle.consumer import EventConsumer
from haggle.nats_embedded import free_port
from haggle.system import start_system

HAGGLE = str(Path(sys.executable).parent / "haggle")


def job(job_id: str) -> ev.JobStarted:
    return ev.JobStarted(event_id=f"s-{job_id}", job_id=job_id, problem="leak", zip_code="94110", max_price=100,
                         providers=[ev.ProviderSpec(id=f"{job_id}-p", service_provider="P",
                                                    phone_number="+14155550100")])


async def test_a_handler_that_always_fails_is_dead_lettered_after_max_deliver(nc) -> None:
    js = nc.jetstream()
    spec = subjects.ConsumerSpec("always-fails", (subjects.job_event_filter("started"),), ack_wait_s=5.0,
                                 max_deliver=3)
    await bus.ensure_consumer(js, spec)
    attempts: list[int] = []

    async def handler(event: ev.Event, delivery) -> None:  # type: ignore[no-untyped-def]
        attempts.append(delivery.num_delivered)
        raise RuntimeError("a handler bug")

    dlq = await nc.subscribe(subjects.deadletter_subject("always-fails"))
    await bus.Publisher(js).publish(job("doomed"))
    consumer = EventConsumer(js, spec, handler)
    task = asyncio.create_task(consumer.run())
    try:
        letter = msgspec.json.decode((await dlq.next_msg(timeout=20)).data, type=ev.DeadLetter)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
    assert attempts == [1, 2]
    assert "not handled after 3 deliveries" in letter.reason and letter.subject == "haggle.job.doomed.started"
    # The ack follows the dead letter's publish and reaches the server on its own: wait for it, bounded.
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        info = await js.consumer_info(subjects.STREAM, "always-fails")
        if (info.num_ack_pending, info.num_pending) == (0, 0) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert info.num_ack_pending == 0 and info.num_pending == 0  # acked: nothing left to retry
    assert all(spec.max_deliver > 0 for name, spec in subjects.CONSUMERS.items() if name != "projector")


async def test_kv_entries_expire_with_their_bucket_ttl(nc) -> None:
    js = nc.jetstream()
    await bus.ensure_topology(js, bus.TopologyOptions(max_age_s=3600, calls_ttl_s=1))
    for bucket in subjects.KV_BUCKETS:
        info = await js.stream_info(f"KV_{bucket}")
        assert info.config.max_age == (1 if bucket == subjects.KV_CALLS else 3600), bucket
    kv = await js.key_value(subjects.KV_CALLS)
    await kv.put("call-1", b"token and phone number")

    async def gone() -> None:
        while True:
            try:
                await kv.get("call-1")
            except KeyNotFoundError:
                return
            await asyncio.sleep(0.2)  # the server expires entries on its own clock: nothing to subscribe to

    await asyncio.wait_for(gone(), 15)


async def test_nats_unreachable_at_start_fails_with_one_masked_line(tmp_path: Path) -> None:
    env = {**os.environ, "NATS_URL": f"nats://haggle:hunter2-secret@127.0.0.1:{free_port()}",
           "NATS_CONNECT_TIMEOUT_SECONDS": "1", "PORT": "0", "HAGGLE_DATA_DIR": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(HAGGLE, "run", "projector", env=env, cwd=tmp_path,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    lines = [line for line in err.decode().splitlines() if "configuration error" in line]
    assert len(lines) == 1 and "NATS unreachable at nats://haggle:****@127.0.0.1" in lines[0]
    assert "hunter2" not in err.decode()


async def test_projection_store_down_at_start_does_not_stop_the_service(nc, nats_server, tmp_path: Path) -> None:
    down = f"postgresql://postgres:pw-secret@127.0.0.1:{free_port()}/nowhere"
    settings = Settings(data_dir=tmp_path, projection_url=down, port=0)
    system = await start_system(settings, ["projector", "extractor"], nats_url=nats_server.url, port=0)
    try:
        async with httpx.AsyncClient(base_url=system.base_url, timeout=15, trust_env=False) as http:
            assert (await http.get("/healthz")).status_code == 200
            r = await http.get("/jobs")
            assert r.status_code == 503 and "pw-secret" not in r.text
    finally:
        await system.stop(5)


async def test_a_migration_that_fails_is_tried_again_not_dropped() -> None:
    """The background opener retries whatever open() raised, not only "unreachable": a migration that failed
    once (say, a statement refused while the database was still starting) must not leave the service without a
    projection until a restart."""
    from haggle_projector.run import _open_when_reachable

    class FlakyStore:
        opens = 0

        async def open(self) -> None:
            self.opens += 1
            if self.opens == 1:
                raise RuntimeError("current transaction is aborted")

    store, began = FlakyStore(), asyncio.Event()
    await asyncio.wait_for(_open_when_reachable(store, began.set), 10)  # type: ignore[arg-type]
    assert began.is_set() and store.opens == 2


@pytest.mark.postgres
async def test_a_projection_store_that_comes_up_later_is_projected_into(nc, nats_server, tmp_path: Path,
                                                                       pg_database: str) -> None:
    """PostgreSQL unreachable at start (nothing listens on its port yet), then reachable through a TCP relay to the
    real server: the service was up all along, and once the store answers the projection catches up."""
    from haggle_sim.tcp_balancer import TcpBalancer

    relay_port = free_port()
    url = pg_database.replace("127.0.0.1:5432", f"127.0.0.1:{relay_port}")
    assert url != pg_database
    system = await start_system(Settings(data_dir=tmp_path, projection_url=url, port=0), ["projector"],
                                nats_url=nats_server.url, port=0)
    try:
        async with httpx.AsyncClient(base_url=system.base_url, timeout=15, trust_env=False) as http:
            assert (await http.get("/jobs")).status_code == 503
            await bus.Publisher(nc.jetstream()).publish(job("before"))  # logged while the store is down
            async with TcpBalancer([("127.0.0.1", 5432)], port=relay_port):

                async def store_answers() -> None:
                    while (await http.get("/jobs/before")).status_code != 200:
                        await asyncio.sleep(0.1)  # the service retries with backoff: nothing to await but its answer

                await asyncio.wait_for(store_answers(), 60)
                r = await http.post("/jobs", json={"problem": "leak", "zip_code": "94110", "max_price": 100,
                                                   "providers": [{"service_provider": "P",
                                                                  "phone_number": "+14155550100"}]})
                assert r.status_code == 201, r.text
    finally:
        await system.stop(5)


@pytest.mark.parametrize("value", ["http://u:topsecret@nats-host:4222", "postgresql://u:topsecret@host/db?x"])
def test_config_errors_mask_passwords_in_urls(value: str) -> None:
    from haggle.config import ConfigError

    env = {"NATS_URL": value} if value.startswith("http") else {"PROJECTION_URL": "mysql" + value[10:]}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env, dotenv=False)
    assert "topsecret" not in str(caught.value)
    assert "topsecret" not in repr(Settings(nats_url="nats://u:topsecret@h", projection_url=value))
