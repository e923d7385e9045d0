"""The extractor service on a real nats-server with the xAI chat stand-in over HTTP: every ended call gets a
PriceExtracted whatever the API does, a call whose gateway died is still extracted, and the job's report
reaches the results webhook exactly once, across a restart."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import pytest
from fastapi import FastAPI, Request, Response
from haggle_contracts import events as ev
from haggle_contracts import state as st
from haggle_contracts import subjects
from haggle_contracts.market import MarketPolicy
from haggle_extractor.completion import JobCompletion
from haggle_extractor.service import Extractor, ExtractorSettings
from haggle_extractor.webhook import ReportSender
from haggle_sim.http_server import serve_app
from haggle_sim.xai_chat_standin import XaiChatStandin

from haggle import bus
from haggle.consumer import Delivery, EventConsumer, Later

DEAL = [("user", "Hello?"), ("assistant", "Hi, is this Ace Plumbing?"), ("user", "Yes, what's up?"),
        ("assistant", "My faucet leaks. What would you charge?"), ("user", "Two hundred for that."),
        ("assistant", "Could you do one fifty?"), ("user", "I can do one seventy five."),
        ("assistant", "Great, one seventy five works. Thank you, goodbye!")]


def call_events(job_id: str, pid: str, lines: list[tuple[str, str]], *, ended: bool = True) -> list[ev.Event]:
    sid = f"CA{pid}"
    out: list[ev.Event] = [
        ev.DialScheduled(event_id=f"d{pid}", job_id=job_id, provider_id=pid, attempt=1),
        ev.CallDialed(event_id=f"c{pid}", job_id=job_id, provider_id=pid, attempt=1, call_sid=sid, to="+1"),
        ev.CallStatusChanged(event_id=f"ip{pid}", job_id=job_id, provider_id=pid, attempt=1, call_sid=sid,
                             status="in-progress"),
    ]
    for i, (role, text) in enumerate(lines):
        out.append(ev.UtteranceTranscribed(event_id=f"u{pid}{i}", job_id=job_id, provider_id=pid, attempt=1,
                                           call_sid=sid, utterance_id=f"item{i}", seq=i, role=ev.Role(role),
                                           text=text))
    if ended:
        out.append(ev.CallEnded(event_id=f"e{pid}", job_id=job_id, provider_id=pid, attempt=1, call_sid=sid,
                                reason="end_call", duration_s=30))
    out.append(ev.CallStatusChanged(event_id=f"done{pid}", job_id=job_id, provider_id=pid, attempt=1, call_sid=sid,
                                    status="completed", duration_s=31))
    return out


def started(job_id: str, pids: list[str]) -> ev.JobStarted:
    return ev.JobStarted(event_id=f"s{job_id}", job_id=job_id, problem="leak", zip_code="94110", max_price=180,
                         providers=[ev.ProviderSpec(id=p, service_provider=f"Plumber {p}",
                                                    phone_number="+14155550101") for p in pids])


@asynccontextmanager
async def running(js, durable: str, handler, concurrency: int = 1) -> AsyncIterator[EventConsumer]:  # type: ignore[no-untyped-def]
    consumer = EventConsumer(js, subjects.CONSUMERS[durable], handler, concurrency=concurrency)
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)


async def wait_for(nc, job_id: str, predicate, timeout: float = 30) -> list[ev.Event]:  # type: ignore[no-untyped-def]
    async def poll() -> list[ev.Event]:
        while True:
            history = await bus.job_history(nc.jetstream(), job_id)
            if predicate(history):
                return history
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


@pytest.mark.parametrize("mode", ["ok", "http500", "timeout", "malformed"])
async def test_every_ended_call_gets_a_result_whatever_the_api_does(nc, mode: str) -> None:
    js = nc.jetstream()
    pub = bus.Publisher(js)
    job = f"x{mode}"
    await pub.publish(started(job, [f"{job}a", f"{job}b"]))
    refusal = [*DEAL[:5], ("assistant", "Could you do one twenty?"), ("user", "No, sorry, I can't go that low."),
               ("assistant", "I understand. Thanks for your time, goodbye!")]
    for e in call_events(job, f"{job}a", DEAL) + call_events(job, f"{job}b", refusal):
        await pub.publish(e)
    async with XaiChatStandin(mode=mode, api_key="k") as chat:
        extractor = Extractor(js, pub, ExtractorSettings(xai_api_key="k", xai_api_base_url=chat.base_url,
                                                         gateway_grace_s=0.2, xai_timeout_s=0.5, xai_retries=1))
        async with running(js, "extractor", extractor.on_call_event, concurrency=2), \
                running(js, "job-completion", JobCompletion(js, pub, MarketPolicy()).on_job_progress):
            history = await wait_for(nc, job, lambda h: any(isinstance(e, ev.JobCompleted) for e in h), 60)
    extracted = [e for e in history if isinstance(e, ev.PriceExtracted)]
    # Exactly one per call, although CallEnded and "completed" both trigger extraction (a list, so a duplicate shows).
    assert sorted(e.provider_id for e in extracted) == [f"{job}a", f"{job}b"], extracted
    a, b = sorted(extracted, key=lambda e: e.provider_id)
    assert (a.outcome, a.price, a.initial_quote) == (ev.Outcome.AGREED, 175, 200)
    assert (b.outcome, b.price) == (ev.Outcome.NO_AGREEMENT, None)
    if mode == "ok":
        assert a.method == "xai"
    else:
        assert a.method.startswith("offline(fallback")
    states = st.fold_job(history)
    assert {s.call_status for s in states.values()} == {"completed", "failed"}
    [done] = [e for e in history if isinstance(e, ev.JobCompleted)]
    assert done.best_provider_id == f"{job}a" and done.best_price == 175


async def test_gateway_died_before_call_ended_still_extracted(nc) -> None:
    js = nc.jetstream()
    pub = bus.Publisher(js)
    await pub.publish(started("gone", ["gone1"]))
    for e in call_events("gone", "gone1", DEAL, ended=False):
        await pub.publish(e)
    extractor = Extractor(js, pub, ExtractorSettings(gateway_grace_s=0.3))  # no key: offline
    async with running(js, "extractor", extractor.on_call_event):
        history = await wait_for(nc, "gone", lambda h: any(isinstance(e, ev.PriceExtracted) for e in h))
    [price] = [e for e in history if isinstance(e, ev.PriceExtracted)]
    assert (price.outcome, price.price, price.method) == (ev.Outcome.AGREED, 175, "offline")
    assert st.fold_job(history)["gone1"].call_status == "completed"


@asynccontextmanager
async def webhook_receiver(fail_first: int) -> AsyncIterator[tuple[str, list[tuple[dict, bytes]]]]:  # type: ignore[type-arg]
    received: list[tuple[dict, bytes]] = []  # type: ignore[type-arg]
    app = FastAPI()

    @app.post("/report")
    async def report(request: Request) -> Response:
        received.append((dict(request.headers), await request.body()))
        return Response(status_code=503 if len(received) <= fail_first else 200)

    async with serve_app(app, shutdown_timeout=5, name="results webhook receiver") as served:
        yield f"{served.base_url}/report", received


async def test_results_webhook_gets_the_report_once_across_a_restart(nc) -> None:
    js = nc.jetstream()
    pub = bus.Publisher(js)
    await pub.publish(started("hook", ["hook1"]))
    for e in call_events("hook", "hook1", DEAL):
        await pub.publish(e)
    # What the reporter's handler returned for each JobCompleted it got (a Later is a retry, None is done).
    outcomes: list[tuple[str, Later | None]] = []
    changed = asyncio.Condition()

    def recording(sender: ReportSender):  # type: ignore[no-untyped-def]
        async def handle(event: ev.Event, delivery: Delivery) -> Later | None:
            result = await sender.on_completed(event, delivery)
            if isinstance(event, ev.JobCompleted):
                async with changed:
                    outcomes.append((event.event_id, result))
                    changed.notify_all()
            return result

        return handle

    async def done_with(event_id: str) -> None:
        async with changed:
            await asyncio.wait_for(changed.wait_for(lambda: (event_id, None) in outcomes), 30)

    async with webhook_receiver(fail_first=1) as (url, received):
        extractor = Extractor(js, pub, ExtractorSettings(gateway_grace_s=0.2))
        async with running(js, "extractor", extractor.on_call_event), \
                running(js, "job-completion", JobCompletion(js, pub, MarketPolicy()).on_job_progress):
            await wait_for(nc, "hook", lambda h: any(isinstance(e, ev.JobCompleted) for e in h))
        async with running(js, "reporter", recording(ReportSender(js, url, "shh"))):
            await done_with("completed-hook")  # delivered (after the 503 and its retry), not merely handled once
        assert [result is None for _, result in outcomes] == [False, True]
        # A restarted extractor (new consumer loop) and a re-published JobCompleted send nothing more.
        [completed] = [e for e in await bus.job_history(js, "hook") if isinstance(e, ev.JobCompleted)]
        await pub.publish(msgspec.structs.replace(completed, event_id="completed-again"))
        async with running(js, "reporter", recording(ReportSender(js, url, "shh"))):
            await done_with("completed-again")  # the re-published one was handled (and found already sent)
    assert len(received) == 2  # one 503 (retried with backoff), then the one delivery
    headers, body = received[-1]
    expected = "sha256=" + hmac.new(b"shh", body, hashlib.sha256).hexdigest()
    assert headers["x-haggle-signature"] == expected
    assert headers["x-haggle-delivery"] == "completed-hook"
    report = json.loads(body)
    assert report["best_provider_id"] == "hook1" and report["best_price"] == 175
