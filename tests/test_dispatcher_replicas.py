"""Two dispatcher replicas on one real nats-server share job state through KV only: a re-start that adds a
provider, handled by one replica, gets that provider dialled by the other; concurrent re-starts on both
replicas both land (compare-and-set on the job record's revision). Dials go through the official SDK to the
Twilio stand-in on loopback."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import msgspec
from haggle_contracts import codec, subjects
from haggle_contracts import events as ev
from haggle_dispatcher.service import Dispatcher, DispatcherSettings
from haggle_dispatcher.twilio_dialer import TwilioDialer
from haggle_sim.personas import Persona, PersonaBook
from haggle_sim.twilio_standin import TwilioStandin
from waits import ACCEPTED

from haggle import bus
from haggle.config import Settings
from haggle.consumer import Delivery
from haggle.simulate import SIM_ACCOUNT_SID, SIM_AUTH_TOKEN, SIM_FROM, simulated_world
from haggle.system import start_system

PERSONAS = [Persona(business=f"Replica Plumber {i}", phone=f"+1415557{i:04d}", answer="busy", ring_ms=50)
            for i in range(12)]


def spec(i: int) -> ev.ProviderSpec:
    return ev.ProviderSpec(id=f"p{i}", service_provider=PERSONAS[i].business, phone_number=PERSONAS[i].phone)


def start(job_id: str, providers: list[int], event_id: str) -> ev.JobStarted:
    return ev.JobStarted(event_id=event_id, job_id=job_id, problem="leak", zip_code="94110", max_price=200,
                         max_attempts=1, providers=[spec(i) for i in providers])


def delivery() -> Delivery:
    return Delivery(seq=0, subject="", num_delivered=1, msg=None)  # type: ignore[arg-type]


async def replica(nc, twilio: TwilioStandin) -> Dispatcher:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    dialer = TwilioDialer(SIM_ACCOUNT_SID, SIM_AUTH_TOKEN, api_base_url=twilio.base_url, timeout_s=5)
    settings = DispatcherSettings(twilio_phone_number=SIM_FROM, public_base_url="http://127.0.0.1:9",
                                  calls_per_second=50, max_concurrent_calls=20)
    return await Dispatcher.create(js, bus.Publisher(js), dialer, settings)


async def scheduled(nc, job_id: str, provider: int) -> ev.DialScheduled:  # type: ignore[no-untyped-def]
    history = await bus.job_history(nc.jetstream(), job_id)
    [event] = [e for e in history if isinstance(e, ev.DialScheduled) and e.provider_id == f"p{provider}"]
    return event


async def test_a_restart_on_one_replica_that_adds_a_provider_is_dialled_by_the_other(nc) -> None:
    async with TwilioStandin(PersonaBook(PERSONAS), SIM_ACCOUNT_SID, SIM_AUTH_TOKEN) as twilio:
        one, two = await replica(nc, twilio), await replica(nc, twilio)
        await one.on_job(start("two-replicas", [0], "s1"), delivery())
        # Replica two dials provider 0, so it has read (and, before this fix, cached) the one-provider job.
        await two.on_dial(await scheduled(nc, "two-replicas", 0), delivery())
        await one.on_job(start("two-replicas", [0, 1], "s2"), delivery())  # the re-start adds provider 1
        await two.on_dial(await scheduled(nc, "two-replicas", 1), delivery())
        dialled = Counter(c.to for c in twilio.calls)
    assert dialled == {PERSONAS[0].phone: 1, PERSONAS[1].phone: 1}
    history = await bus.job_history(nc.jetstream(), "two-replicas")
    assert sorted(e.provider_id for e in history if isinstance(e, ev.CallDialed)) == ["p0", "p1"]


async def test_concurrent_restarts_on_two_replicas_both_land(nc) -> None:
    async with TwilioStandin(PersonaBook(PERSONAS), SIM_ACCOUNT_SID, SIM_AUTH_TOKEN) as twilio:
        one, two = await replica(nc, twilio), await replica(nc, twilio)
        await one.on_job(start("cas", [0], "c0"), delivery())
        for round_, (a, b) in enumerate([(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]):
            await asyncio.gather(one.on_job(start("cas", [a], f"a{round_}"), delivery()),
                                 two.on_job(start("cas", [b], f"b{round_}"), delivery()))
        kv = await nc.jetstream().key_value(subjects.KV_DIALS)
        job = codec.decode((await kv.get("job.cas")).value)
        assert isinstance(job, ev.JobStarted)
        assert sorted(int(p.id[1:]) for p in job.providers) == list(range(11))
        assert job.max_attempts == 1
        # Every provider added on either replica is dialled by whichever replica picks its dial up.
        history = await bus.job_history(nc.jetstream(), "cas")
        dials = [e for e in history if isinstance(e, ev.DialScheduled)]
        for i, event in enumerate(sorted(dials, key=lambda e: e.provider_id)):
            await (one if i % 2 else two).on_dial(event, delivery())
        dialled = Counter(c.to for c in twilio.calls)
    assert dialled == {p.phone: 1 for p in PERSONAS[:11]}


async def test_two_dispatcher_services_dial_a_provider_that_a_restart_adds(nc, nats_server, tmp_path: Path) -> None:
    """The same through the services' own consumers: two dispatcher replicas next to the rest of the system."""
    first, added = PERSONAS[10], PERSONAS[11]
    settings = Settings(data_dir=tmp_path, negotiation_strategy="independent",
                        projection_url=f"sqlite:///{tmp_path / 'r.db'}", port=0,
                        max_call_attempts=1, calling_hours=None)
    async with simulated_world(settings, personas=PersonaBook([first, added])) as world:
        twilio: TwilioStandin = world.twilio  # type: ignore[assignment]
        system = await start_system(world.settings, nats_url=nats_server.url)
        second = await start_system(world.settings, ["dispatcher"], nats_url=nats_server.url, port=0)
        try:
            async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
                body = {"job_id": "restarted", "problem": "leak", "zip_code": "94110", "max_price": 200,
                        "providers": [{"service_provider": first.business, "phone_number": first.phone}]}
                assert (await http.post("/jobs", json=body)).status_code in ACCEPTED
            await twilio.wait_for_call(timeout=20)
            [started] = [e for e in await bus.job_history(nc.jetstream(), "restarted")
                         if isinstance(e, ev.JobStarted)]
            extra = ev.ProviderSpec(id="p_added", service_provider=added.business, phone_number=added.phone)
            await bus.Publisher(nc.jetstream()).publish(msgspec.structs.replace(
                started, event_id="restart-adds", providers=[*started.providers, extra]))
            while added.phone not in {c.to for c in twilio.calls}:
                await twilio.wait_for_call(timeout=20)
            await twilio.wait_all_ended(timeout=20)
        finally:
            await second.stop(5)
            await system.stop(5)
        dialled = Counter(c.to for c in twilio.calls)
    assert dialled == {first.phone: 1, added.phone: 1}
