"""The dashboard over real HTTP: pages, sign-in, the start-a-job form and the live SSE feed.

A real nats-server, the real projector service (its store fills from the log), and the dashboard router on
a loopback uvicorn server with a short heartbeat so the keep-alive is observable quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from haggle_contracts import events as ev
from haggle_contracts import state as st
from haggle_contracts import subjects
from haggle_projector.api import session_token
from haggle_projector.dashboard import DashboardDeps, build_dashboard_router

from haggle import bus
from haggle.config import Settings
from haggle.system import System, start_system

KEY = "dash-s3cret"
EVIL = "<script>alert('x')</script> & \"Sons\""


@dataclass
class Dash:
    system: System
    deps: DashboardDeps
    base_url: str
    publisher: bus.Publisher


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())

    async def started() -> None:
        while True:
            if server.started:
                return
            await asyncio.sleep(0.01)  # uvicorn exposes no start event to await

    await asyncio.wait_for(started(), 10)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def dash(nc, nats_server, tmp_path: Path) -> AsyncIterator[Dash]:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'dash.db'}", port=0, api_key=KEY)
    system = await start_system(settings, ["projector"], nats_url=nats_server.url, port=0)
    deps = DashboardDeps(store=system.handle("projector").store,  # type: ignore[attr-defined]
                         nc=system.rt.nc, js=system.rt.js, api_key=KEY, publish=system.rt.publisher.publish,
                         heartbeat_s=0.3)
    app = FastAPI()
    app.include_router(build_dashboard_router(deps))
    try:
        async with serve(app) as base_url:
            yield Dash(system=system, deps=deps, base_url=base_url, publisher=system.rt.publisher)
            await deps.close()
    finally:
        await system.stop(5)


def client(d: Dash, *, signed_in: bool = True) -> httpx.AsyncClient:
    cookies = {"haggle_session": session_token(KEY)} if signed_in else None
    return httpx.AsyncClient(base_url=d.base_url, timeout=10, cookies=cookies)


def job(job_id: str, names: tuple[str, ...] = ("Joe's Plumbing", "Bay Pipe Pros")) -> ev.JobStarted:
    return ev.JobStarted(
        event_id=f"start-{job_id}", job_id=job_id, problem="Kitchen faucet leaks", zip_code="94110", max_price=180,
        providers=[ev.ProviderSpec(id=f"p{i}", service_provider=name, phone_number=f"+1415555010{i}")
                   for i, name in enumerate(names)],
    )


def call_events(job_id: str, pid: str, *, price: float, first: float, lines: list[str]) -> list[ev.Event]:
    sid = f"CA{pid}"
    common: dict[str, Any] = {"job_id": job_id, "provider_id": pid, "attempt": 1}
    out: list[ev.Event] = [
        ev.DialScheduled(event_id=f"{job_id}-{pid}-d", **common),
        ev.CallDialed(event_id=f"{job_id}-{pid}-c", call_sid=sid, to="+14155550000", **common),
        ev.CallStatusChanged(event_id=f"{job_id}-{pid}-s", call_sid=sid, status="in-progress", **common),
    ]
    out += [ev.UtteranceTranscribed(event_id=f"{job_id}-{pid}-u{i}", call_sid=sid, utterance_id=f"{pid}-u{i}", seq=i,
                                    role=ev.Role.USER if i % 2 == 0 else ev.Role.ASSISTANT, text=text, **common)
            for i, text in enumerate(lines)]
    out += [
        ev.CallEnded(event_id=f"{job_id}-{pid}-e", call_sid=sid, reason="end_call", duration_s=65.0,
                     utterances=len(lines), **common),
        ev.PriceExtracted(event_id=f"{job_id}-{pid}-x", call_sid=sid, outcome=ev.Outcome.AGREED, agreed=True,
                          price=price, initial_quote=first, **common),
    ]
    return out


async def publish_all(d: Dash, events: list[ev.Event]) -> None:
    for event in events:
        await d.publisher.publish(event)


class Feed:
    """Reads a text/event-stream response one event at a time (comments are returned as ("comment", text))."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self) -> tuple[str, Any]:
        kind, data = "message", ""
        async for line in self.lines:
            if line.startswith(":"):
                return "comment", line[1:].strip()
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
            elif line == "" and data:
                return kind, json.loads(data)
        raise EOFError("the feed ended")

    async def until(self, predicate, within: float = 10.0) -> list[tuple[str, Any]]:  # type: ignore[no-untyped-def]
        """Every event up to and including the first one matching `predicate`."""
        got: list[tuple[str, Any]] = []

        async def read() -> list[tuple[str, Any]]:
            while True:
                got.append(await self.next())
                if predicate(*got[-1]):
                    return got

        return await asyncio.wait_for(read(), within)


async def wait_rows(d: Dash, job_id: str, n: int) -> None:
    async def poll() -> None:
        while True:
            if len(await d.deps.store.list_job(job_id)) >= n:
                return
            await asyncio.sleep(0.05)  # the projector is a separate consumer: only its output is observable

    await asyncio.wait_for(poll(), 10)


async def test_pages_require_the_key_and_sign_in_sets_a_strict_cookie(dash: Dash) -> None:
    await dash.publisher.publish(job("auth1"))
    async with client(dash, signed_in=False) as anon:
        for path in ("/", "/ui/jobs/auth1", "/ui/jobs/auth1/calls/p0", "/ui/new"):
            r = await anon.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/ui/login?next="), path
        r = await anon.get("/ui/jobs/auth1/events")
        assert r.status_code == 401
        r = await anon.post("/ui/new", data={"problem": "x", "zip_code": "1", "max_price": "5",
                                             "providers": "A, +14155550101"})
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        assert (await anon.get("/ui/jobs/auth1", headers={"Authorization": "Bearer wrong"})).status_code == 303

        login = await anon.get("/ui/login", params={"next": "/ui/jobs/auth1"})
        assert login.status_code == 200 and 'type="password"' in login.text
        bad = await anon.post("/ui/login", data={"key": "nope", "next": "/ui/jobs/auth1"})
        assert bad.status_code == 401 and "set-cookie" not in bad.headers

        ok = await anon.post("/ui/login", data={"key": KEY, "next": "/ui/jobs/auth1"})
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/jobs/auth1"
        cookie = ok.headers["set-cookie"].lower()
        assert "haggle_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert KEY.lower() not in cookie  # a signed session token, never the key itself
        page = await anon.get("/ui/jobs/auth1")  # the client kept the cookie
        assert page.status_code == 200 and "Kitchen faucet leaks" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]

        # The sign-in form is no open redirect.
        for evil in ("//evil.example/x", "/\t/evil.example", "https://evil.example"):
            away = await anon.post("/ui/login", data={"key": KEY, "next": evil})
            assert away.headers["location"] == "/", evil
        out = await anon.post("/ui/logout")
        assert out.status_code == 303 and 'haggle_session=""' in out.headers["set-cookie"]
    # The anonymous form post started no job: the only JobStarted on the whole log is the test's own (a job the
    # form had started would have a fresh id, so auth1's history alone could not show it).
    started = [s.event async for s in bus.replay(dash.system.rt.js, subjects.job_event_filter("started"))]
    assert [(type(e).__name__, e.job_id) for e in started if e is not None] == [("JobStarted", "auth1")]
    assert [type(e).__name__ for e in await bus.job_history(dash.system.rt.js, "auth1")] == ["JobStarted"]


async def test_pages_escape_untrusted_provider_text(dash: Dash) -> None:
    await dash.publisher.publish(job("esc1", names=(EVIL, "Plain Co")))
    await publish_all(dash, call_events("esc1", "p0", price=150, first=200,
                                        lines=["<img src=x onerror=alert(1)> we charge $200", "How about $150?"]))
    await wait_rows(dash, "esc1", 2)
    async with client(dash) as http:
        listing = await http.get("/")
        job_page = await http.get("/ui/jobs/esc1")
        call_page = await http.get("/ui/jobs/esc1/calls/p0")
    for r in (listing, job_page, call_page):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "<script>alert" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;Sons&quot;" in job_page.text
    assert "&lt;img src=x onerror=alert(1)&gt; we charge $200" in call_page.text
    assert 'class="msg provider"' in call_page.text and 'class="msg agent"' in call_page.text
    assert "PriceExtracted" in call_page.text  # the event timeline, from the stream


async def test_job_page_shows_rows_and_highlights_the_best_offer(dash: Dash) -> None:
    await dash.publisher.publish(job("best1"))
    await publish_all(dash, call_events("best1", "p0", price=170, first=220, lines=["$220", "ok"]))
    await publish_all(dash, call_events("best1", "p1", price=150, first=200, lines=["$200", "$150?"]))
    async with client(dash) as http:
        async def settled() -> str:
            while True:
                r = await http.get("/ui/jobs/best1")
                if r.text.count('data-terminal="true"') == 2:
                    return r.text
                await asyncio.sleep(0.05)  # the projection trails the log

        text = await asyncio.wait_for(settled(), 10)
        assert (await http.get("/ui/jobs/nope")).status_code == 404
        # A job whose events are gone from the stream (retention) is still shown from the projection.
        await dash.deps.store.upsert(st.ProviderState(id="old-p", job_id="old1", service_provider="Archived Co",
                                                      phone_number="+14155550111", zip_code="94110",
                                                      problem="Old leak", max_price=90, call_status="failed",
                                                      outcome="busy"))
        old = await http.get("/ui/jobs/old1")
        assert old.status_code == 200 and "Archived Co" in old.text and "Busy" in old.text
        assert (await http.get("/ui/jobs/best1/calls/nobody")).status_code == 404
    assert '<tr data-provider-id="p1" data-status="completed" data-outcome="agreed" data-terminal="true" ' \
           'class="best">' in text
    assert "saves $50 on their first quote of $200" in text
    assert "$150" in text and "1m 05s" in text and "1/3" in text


async def test_feed_sends_history_then_live_events_once(dash: Dash) -> None:
    await dash.publisher.publish(job("live1"))
    history = call_events("live1", "p0", price=170, first=220, lines=["We charge $220", "Could you do 170?"])
    await publish_all(dash, history[:4])  # scheduled, dialed, in progress, first utterance
    async with client(dash) as http, http.stream("GET", "/ui/jobs/live1/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        feed = Feed(r)
        got = await feed.until(lambda kind, _: kind == "ready")
        items = [data for kind, data in got if kind == "item"]
        assert [i["type"] for i in items] == ["JobStarted", "DialScheduled", "CallDialed", "CallStatusChanged",
                                              "UtteranceTranscribed"]
        assert [i["seq"] for i in items] == sorted(i["seq"] for i in items) and items[0]["seq"] >= 1
        assert items[-1]["utterance"]["text"] == "We charge $220" and items[-1]["who"] == "Joe's Plumbing"
        rows = {data["id"]: data for kind, data in got if kind == "row"}
        assert rows["p0"]["status"] == "in_progress" and rows["p0"]["cells"]["status"] == "On the call"
        assert rows["p1"]["status"] == "queued"
        [job_msg] = [data for kind, data in got if kind == "job"]
        assert job_msg["status"] == "running" and job_msg["best"] is None

        # Live: the rest of the call; one event published twice (a retried publish) must arrive once.
        await dash.publisher.publish(history[4])
        await dash.publisher.publish(history[4])
        await publish_all(dash, history[5:])
        live = await feed.until(lambda kind, data: kind == "job" and data["best"] is not None)
        live_items = [data for kind, data in live if kind == "item"]
        assert [i["type"] for i in live_items] == ["UtteranceTranscribed", "CallEnded", "PriceExtracted"]
        assert all(i["seq"] is None for i in live_items)  # core messages carry no stream sequence
        last_row = [data for kind, data in live if kind == "row"][-1]
        assert last_row["status"] == "completed" and last_row["cells"]["negotiated_price"] == "$170"
        assert live[-1][1]["best"] == {"provider_id": "p0", "name": "Joe's Plumbing", "price": "$170",
                                       "saving": "saves $50 on their first quote of $220"}
        assert await feed.until(lambda kind, _: kind == "comment", within=5)  # the keep-alive


async def test_call_feed_carries_one_provider(dash: Dash) -> None:
    await dash.publisher.publish(job("filt1"))
    await publish_all(dash, call_events("filt1", "p0", price=170, first=220, lines=["a"]))
    await publish_all(dash, call_events("filt1", "p1", price=150, first=200, lines=["b"]))
    async with client(dash) as http, http.stream("GET", "/ui/jobs/filt1/events", params={"provider": "p1"}) as r:
        got = await Feed(r).until(lambda kind, _: kind == "ready")
    assert {d["provider_id"] for k, d in got if k == "item"} == {None, "p1"}
    assert [d["id"] for k, d in got if k == "row"] == ["p1"]
    assert not [d for k, d in got if k == "job"]


async def test_closing_the_browser_or_stopping_the_service_ends_the_feed(dash: Dash) -> None:
    await dash.publisher.publish(job("bye1"))
    hub = dash.deps.hub

    async def until_open(n: int) -> None:
        while True:
            if len(hub.queues) == n:
                return
            await asyncio.sleep(0.02)  # the server notices the disconnect on its own schedule

    async with client(dash) as http:
        async with http.stream("GET", "/ui/jobs/bye1/events") as r:
            await Feed(r).until(lambda kind, _: kind == "ready")
            assert len(hub.queues) == 1
        await asyncio.wait_for(until_open(0), 5)  # the client went away: subscription cleaned up

        async with http.stream("GET", "/ui/jobs/bye1/events") as r:
            feed = Feed(r)
            await feed.until(lambda kind, _: kind == "ready")
            await dash.deps.close()
            with pytest.raises(EOFError):
                await feed.until(lambda kind, _: kind == "item", within=5)
    await asyncio.wait_for(until_open(0), 5)


async def test_new_job_form_starts_a_job_from_pasted_lines_and_a_csv(dash: Dash) -> None:
    csv_text = "service_provider,phone_number,zip_code,max_price\nDrip Masters,+1 415 555 0199,94112,$210\n"
    async with client(dash) as http:
        form = await http.get("/ui/new")
        assert form.status_code == 200 and 'enctype="multipart/form-data"' in form.text
        r = await http.post("/ui/new", data={
            "problem": "Leaking faucet", "zip_code": "94110", "max_price": "$200",
            "context_answers": "Single handle",
            "providers": "Joe's Plumbing, +1 (415) 555-0101\n\nSmith, Jones & Co\t+14155550102\n",
        }, files={"providers_csv": ("providers.csv", csv_text.encode(), "text/csv")})
        assert r.status_code == 303, r.text
        job_url = r.headers["location"]
        job_id = job_url.rsplit("/", 1)[1]
        page = await http.get(job_url)  # right away: the log answers before the projection catches up
        assert page.status_code == 200 and "Leaking faucet" in page.text and "Drip Masters" in page.text
    [started] = await bus.job_history(dash.system.rt.js, job_id)
    assert isinstance(started, ev.JobStarted) and started.source == "dashboard"
    assert started.max_price == 200 and started.context_answers == "Single handle"
    assert [(p.service_provider, p.phone_number, p.zip_code, p.max_price) for p in started.providers] == [
        ("Joe's Plumbing", "+14155550101", None, None),
        ("Smith, Jones & Co", "+14155550102", None, None),
        ("Drip Masters", "+14155550199", "94112", 210.0),
    ]


BAD_FORMS: list[tuple[dict[str, str], str | None, list[str]]] = [
    ({"providers": "Joe, +14155550101\nBob, 555-1234"}, None,
     ["Line 2 (Bob): phone number must be an E.164 phone number"]),
    ({"providers": "just a name"}, None, ["Line 1: expected &#x27;Name, +1 phone number&#x27;"]),
    ({"providers": ""}, None, ["paste at least one"]),
    ({"max_price": "cheap"}, None, ["Target price &#x27;cheap&#x27; is not a number"]),
    ({"max_price": "-3", "problem": ""}, None, ["Target price must be more than 0",
                                                 "Problem: describe what needs fixing"]),
    ({"providers": ""}, "name,phone\nA,+14155550101\n", ["missing column(s) service_provider, phone_number"]),
    ({"providers": ""}, "service_provider,phone_number,color\nA,+14155550101,red\n", ["unknown column(s) color"]),
    ({"providers": ""}, "service_provider,phone_number,max_price\nA,+14155550101,lots\n",
     ["CSV line 2: target price &#x27;lots&#x27; is not a number"]),
    ({"providers": ""}, "\xff\xfe not utf-8", ["The CSV file is not UTF-8 text"]),
]


async def test_new_job_form_shows_clear_errors_and_publishes_nothing(dash: Dash) -> None:
    async with client(dash) as http:
        for fields, csv_text, needles in BAD_FORMS:
            data = {"problem": "Leaking faucet", "zip_code": "94110", "max_price": "200",
                    "providers": "Joe, +14155550101", **fields}
            raw = csv_text.encode("latin-1") if csv_text else b""
            files = {"providers_csv": ("p.csv", raw, "text/csv")} if csv_text else None
            r = await http.post("/ui/new", data=data, files=files)
            assert r.status_code == 422, fields
            assert 'role="alert"' in r.text
            for needle in needles:
                assert needle in r.text, (needle, fields)
            assert data["zip_code"] in r.text  # the operator's input is kept
    info = await dash.system.rt.js.stream_info("HAGGLE")
    assert info.state.messages == 0


async def test_static_files_have_their_content_types(dash: Dash) -> None:
    async with client(dash, signed_in=False) as http:
        js = await http.get("/ui/static/app.js")
        css = await http.get("/ui/static/style.css")
        missing = await http.get("/ui/static/..%2Froutes.py")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in js.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404
