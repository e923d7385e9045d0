"""Media gateway faults on real parts: a real nats-server, real WebSockets, the real services, and the
Twilio and xAI stand-ins with their fault knobs.

- the realtime WebSocket drops mid-call: reopened once with the conversation so far, the call completes;
  a second drop, or a refused reopen, ends the call with "realtime_error";
- Twilio's media WebSocket drops without `stop` while the call is up: hung up through REST, "twilio_stream_lost";
- a gateway process is SIGKILLed mid-call: what it published stays, Twilio's status callback (through the
  balancer, to the surviving gateway) settles the call;
- SIGTERM drains: live calls go on until they end or the deadline, then end with "shutdown"; new streams and
  TwiML requests are refused meanwhile.

Every scenario checks that each call ends terminal in the projection with the transcript that is on the log,
and that no event is lost or applied twice (`assert_log_consistent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from haggle_contracts import codec, subjects
from haggle_contracts import events as ev
from haggle_gateway.prompt import RESUMED_NOTE
from haggle_sim.personas import Persona, PersonaBook, ToolCall, Turn, negotiation
from haggle_sim.realtime_standin import RealtimeStandin
from haggle_sim.tcp_balancer import TcpBalancer
from haggle_sim.twilio_standin import TwilioStandin
from haggle_sim.xai_chat_standin import XaiChatStandin
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator
from waits import ACCEPTED, TERMINAL, settled, wait_healthy

from haggle import bus
from haggle.config import Settings
from haggle.nats_embedded import free_port
from haggle.simulate import SIM_ACCOUNT_SID, SIM_AUTH_TOKEN, SIM_FROM, SIM_XAI_KEY
from haggle.system import System, start_system

HAGGLE = str(Path(sys.executable).parent / "haggle")


# ------------------------------------------------------------------------------------------------ the world


@dataclass
class World:
    system: System
    twilio: TwilioStandin
    realtime: RealtimeStandin
    nc: Any
    events: list[ev.Event]
    changed: asyncio.Event

    @property
    def api(self) -> str:
        return self.system.base_url

    async def wait_for(self, predicate: Callable[[ev.Event], bool], timeout_s: float = 30.0) -> ev.Event:
        async def until() -> ev.Event:
            while True:
                for event in list(self.events):
                    if predicate(event):
                        return event
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(until(), timeout_s)


@contextlib.asynccontextmanager
async def collect(nc: Any, job_id: str) -> AsyncIterator[tuple[list[ev.Event], asyncio.Event]]:
    """Every event of the job as it is published (core NATS), for waiting on; the log is read separately."""
    events: list[ev.Event] = []
    changed = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        with contextlib.suppress(codec.EventDecodeError):
            events.append(codec.decode(msg.data))
            changed.set()

    sub = await nc.subscribe(subjects.job_filter(job_id), cb=on_msg)
    try:
        yield events, changed
    finally:
        await sub.unsubscribe()


def system_settings(tmp_path: Path, twilio: TwilioStandin, realtime: RealtimeStandin, chat: XaiChatStandin, *,
                    public_base_url: str | None = None, port: int | None = None) -> Settings:
    port = port or free_port()
    return Settings(
        data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'faults.db'}", port=port,
        public_base_url=public_base_url or f"http://127.0.0.1:{port}", twilio_account_sid=SIM_ACCOUNT_SID,
        twilio_auth_token=SIM_AUTH_TOKEN, twilio_phone_number=SIM_FROM, twilio_api_base_url=twilio.base_url,
        xai_api_key=SIM_XAI_KEY, xai_realtime_url=realtime.url, xai_api_base_url=chat.base_url,
        calling_hours=None, max_call_attempts=1, calls_per_second=5.0,
        negotiation_strategy="independent",  # these tests run calls side by side on purpose
    )


@contextlib.asynccontextmanager
async def world(nc: Any, nats_url: str, tmp_path: Path, personas: list[Persona], job_id: str, *,
                realtime: dict[str, Any] | None = None, twilio: dict[str, Any] | None = None) -> AsyncIterator[World]:
    """Every service in this process on the test's nats-server, the stand-ins with the given fault knobs."""
    book = PersonaBook(personas)
    async with TwilioStandin(book, SIM_ACCOUNT_SID, SIM_AUTH_TOKEN, reply_gap_ms=250, **(twilio or {})) as tw, \
            RealtimeStandin(book, api_key=SIM_XAI_KEY, **(realtime or {})) as rs, \
            XaiChatStandin(mode="ok", api_key=SIM_XAI_KEY) as chat, collect(nc, job_id) as (events, changed):
        system = await start_system(system_settings(tmp_path, tw, rs, chat), nats_url=nats_url,
                                    service_options={"extractor": {"gateway_grace_s": 1.0}})
        try:
            yield World(system=system, twilio=tw, realtime=rs, nc=nc, events=events, changed=changed)
        finally:
            await system.stop(5)


def subdir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def job_body(job_id: str, personas: list[Persona]) -> dict[str, Any]:
    return {"job_id": job_id, "problem": "leaking kitchen faucet", "zip_code": "94110", "max_price": 200,
            "max_attempts": 1,
            "providers": [{"id": f"{job_id}-p{i}", "service_provider": p.business, "phone_number": p.phone}
                          for i, p in enumerate(personas)]}


async def start_job(api: str, job_id: str, personas: list[Persona]) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=10, trust_env=False) as http:
        response = await http.post("/jobs", json=job_body(job_id, personas))
        assert response.status_code in ACCEPTED, response.text


def assert_log_consistent(history: list[ev.Event], doc: dict[str, Any]) -> dict[str, list[ev.UtteranceTranscribed]]:
    """No event twice, one settlement per call, contiguous utterances, and the projection shows exactly the log's
    transcript for every (terminal) provider. Returns each call's utterances in order."""
    ids = [e.event_id for e in history]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    by_call: dict[str, list[ev.UtteranceTranscribed]] = {}
    for e in history:
        if isinstance(e, ev.UtteranceTranscribed):
            by_call.setdefault(e.call_sid, []).append(e)
    for call_sid, utterances in by_call.items():
        utterances.sort(key=lambda u: u.seq)
        assert [u.seq for u in utterances] == list(range(len(utterances))), call_sid
        assert len({u.utterance_id for u in utterances}) == len(utterances)
    ended = Counter(e.call_sid for e in history if isinstance(e, ev.CallEnded))
    priced = Counter(e.call_sid for e in history if isinstance(e, ev.PriceExtracted))
    assert set(ended.values()) <= {1} and set(priced.values()) == {1}
    for row in doc["providers"]:
        assert row["call_status"] in TERMINAL, row
        log_transcript = [{"role": u.role.value, "text": u.text} for u in by_call.get(row["call_sid"], [])]
        assert row["transcript"] == log_transcript, row["service_provider"]
    return by_call


def lines(persona: Persona, n: int | None = None) -> list[dict[str, str]]:
    turns = persona.turns if n is None else persona.turns[:n]
    return [{"role": "assistant" if t.speaker == "agent" else "user", "text": t.text.replace("{business}",
                                                                                             persona.business)}
            for t in turns]


def joe(ms_per_char: int = 12) -> Persona:
    return negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175,
                       ms_per_char=ms_per_char)


# ------------------------------------------------------------------------------------------------ realtime drops


@pytest.mark.slow
async def test_realtime_drop_is_survived_by_reopening_with_the_conversation(nc, nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    persona = joe()
    # The first session dies right after the agent's second line; the second one is not dropped.
    async with world(nc, nats_server.url, tmp_path, [persona], "rt1",
                     realtime={"drop_after_responses": 2, "drop_sessions": 1}) as w:
        await start_job(w.api, "rt1", [persona])
        ended = await w.wait_for(lambda e: isinstance(e, ev.CallEnded), 40)
        doc = await settled(w.api, "rt1")
        call = w.twilio.calls[0]
        await w.twilio.wait_for_call_end(call.sid, timeout=10)
        sessions = list(w.realtime.sessions)
        history = await bus.job_history(nc.jetstream(), "rt1")

    assert isinstance(ended, ev.CallEnded) and ended.reason == "end_call"
    by_call = assert_log_consistent(history, doc)
    row = doc["providers"][0]
    # The whole conversation, every line once, in spoken order, across the two sessions.
    assert row["transcript"] == lines(persona)
    assert row["outcome"] == "agreed" and row["negotiated_price"] == 175
    assert len(by_call[call.sid]) == len(persona.turns) == ended.utterances
    # One Twilio stream all along (the callee heard silence, not a hang-up), hung up by us after the goodbye.
    assert len(call.streams) == 1 and not call.violations
    assert call.updates == [{"Status": "completed"}]
    # The reopened session got the conversation so far as items, and the provider's words stayed out of its
    # instructions (only a fixed note says the call resumed).
    assert len(sessions) == 2
    replayed = [e["item"] for e in sessions[1].received("conversation.item.create") if e["item"]["type"] == "message"]
    assert [(i["role"], i["content"][0]["type"], i["content"][0]["text"]) for i in replayed] == [
        (line["role"], "input_text" if line["role"] == "user" else "output_text", line["text"])
        for line in lines(persona, 4)]
    assert RESUMED_NOTE in sessions[1].instructions and RESUMED_NOTE not in sessions[0].instructions
    provider_words = [t.text for t in persona.turns if t.speaker == "provider"]
    assert not any(text in sessions[1].instructions for text in provider_words)
    # The replayed lines did not take places in the spoken transcript: no gaps, no late release.
    assert [u.text for u in by_call[call.sid]] == [line["text"] for line in lines(persona)]


@pytest.mark.slow
async def test_realtime_lost_twice_or_not_reopened_ends_the_call(nc, nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    persona = joe()
    scenarios = {
        # Every session dies after its first response: the reopened one goes the same way.
        "rt2a": {"drop_after_responses": 1},
        # The first session dies after the agent's second line and no new session is accepted.
        "rt2b": {"drop_after_responses": 2, "max_sessions": 1},
    }
    for job_id, knobs in scenarios.items():
        async with world(nc, nats_server.url, subdir(tmp_path, job_id), [persona], job_id, realtime=knobs) as w:
            await start_job(w.api, job_id, [persona])
            ended = await w.wait_for(lambda e: isinstance(e, ev.CallEnded), 40)
            doc = await settled(w.api, job_id)
            call = await w.twilio.wait_for_call_end(w.twilio.calls[0].sid, timeout=10)
            refused, sessions = w.realtime.refused, len(w.realtime.sessions)
            history = await bus.job_history(nc.jetstream(), job_id)

        assert isinstance(ended, ev.CallEnded) and ended.reason == "realtime_error", job_id
        assert_log_consistent(history, doc)
        row = doc["providers"][0]
        assert row["end_reason"] == "realtime_error" and row["call_status"] == "failed"
        # The transcript so far is kept: hello, greeting, their answer, our problem statement.
        assert row["transcript"] == lines(persona, 4), job_id
        assert ended.utterances == 4
        assert call.updates == [{"Status": "completed"}]  # hung up cleanly through REST
        assert len(call.streams) == 1
        if job_id == "rt2a":
            assert sessions == 2 and refused == 0
        else:
            assert sessions == 1 and refused >= 1


# ------------------------------------------------------------------------------------------------ Twilio drop


async def test_twilio_stream_drop_hangs_up_the_call_through_rest(nc, nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    persona = joe(ms_per_char=20)
    async with world(nc, nats_server.url, tmp_path, [persona], "tw1", twilio={"drop_stream_after_s": 4.0}) as w:
        await start_job(w.api, "tw1", [persona])
        ended = await w.wait_for(lambda e: isinstance(e, ev.CallEnded), 30)
        doc = await settled(w.api, "tw1")
        call = await w.twilio.wait_for_call_end(w.twilio.calls[0].sid, timeout=10)
        history = await bus.job_history(nc.jetstream(), "tw1")

    assert isinstance(ended, ev.CallEnded) and ended.reason == "twilio_stream_lost"
    stream = call.stream
    assert stream is not None and stream.end_reason == "stream-dropped" and stream.stop_sent_at is None
    # The phone call outlived its stream until the gateway hung it up.
    assert call.updates == [{"Status": "completed"}] and call.end_reason == "hangup-rest-completed"
    by_call = assert_log_consistent(history, doc)
    row = doc["providers"][0]
    assert row["end_reason"] == "twilio_stream_lost"
    got = row["transcript"]
    assert 2 <= len(got) < len(persona.turns)
    # Whole lines in order; where the 4 s drop lands depends on the machine's pace, and a line it cuts short is
    # kept as far as it got.
    want = lines(persona, len(got))
    assert got[:-1] == want[:-1]
    assert got[-1]["role"] == want[-1]["role"] and got[-1]["text"] and want[-1]["text"].startswith(got[-1]["text"])
    assert len(by_call[call.sid]) == ended.utterances


# ------------------------------------------------------------------------------------------------ processes


def process_env(nats_url: str, twilio: TwilioStandin, realtime: RealtimeStandin, public: str,
                **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "XAI_", "SUPABASE_", "PROJECTION",
                                                                     "GATEWAY_"))}
    return {**keep, "NATS_URL": nats_url, "TWILIO_ACCOUNT_SID": SIM_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": SIM_AUTH_TOKEN,
            "TWILIO_PHONE_NUMBER": SIM_FROM, "TWILIO_API_BASE_URL": twilio.base_url, "XAI_API_KEY": SIM_XAI_KEY,
            "XAI_REALTIME_URL": realtime.url, "PUBLIC_BASE_URL": public, "CALLING_HOURS": "any", **extra}


def run_gateway(tmp_path: Path, name: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([HAGGLE, "run", "media-gateway"], env={**env, "PORT": str(port)}, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "wb"))


async def live_calls(port: int) -> float:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "haggle_live_calls":
            return sum(s.value for s in family.samples)
    return 0.0


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.slow
async def test_gateway_killed_mid_call_is_settled_from_the_status_callback(nc, nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    persona = joe(ms_per_char=30)  # slow enough to be mid-conversation at the kill
    book = PersonaBook([persona])
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    async with TwilioStandin(book, SIM_ACCOUNT_SID, SIM_AUTH_TOKEN) as twilio, \
            RealtimeStandin(book, api_key=SIM_XAI_KEY) as realtime, \
            XaiChatStandin(mode="ok", api_key=SIM_XAI_KEY) as chat, \
            TcpBalancer([("127.0.0.1", p) for p in ports]) as balancer, collect(nc, "kill1") as (events, changed):
        public = f"http://127.0.0.1:{balancer.port}"
        env = process_env(nats_server.url, twilio, realtime, public)
        procs = [run_gateway(tmp_path, f"gateway{i}", env, port) for i, port in enumerate(ports)]
        system = await start_system(system_settings(tmp_path, twilio, realtime, chat, public_base_url=public),
                                    ["projector", "dispatcher", "extractor"], nats_url=nats_server.url,
                                    service_options={"extractor": {"gateway_grace_s": 1.0}})
        try:
            await asyncio.gather(*(wait_healthy(p) for p in ports))
            await start_job(system.base_url, "kill1", [persona])
            w = World(system=system, twilio=twilio, realtime=realtime, nc=nc, events=events, changed=changed)
            await w.wait_for(lambda e: isinstance(e, ev.UtteranceTranscribed) and e.seq == 2, 30)
            before_kill = {e.event_id for e in events if isinstance(e, ev.UtteranceTranscribed)}
            holders = [i for i, port in enumerate(ports) if await live_calls(port) == 1]
            assert len(holders) == 1, holders
            victim = procs[holders[0]]
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            call = await twilio.wait_for_call_end(twilio.calls[0].sid, timeout=20)
            await w.wait_for(lambda e: isinstance(e, ev.PriceExtracted), 30)
            doc = await settled(system.base_url, "kill1")
            history = await bus.job_history(nc.jetstream(), "kill1")
        finally:
            await system.stop(5)
            for proc in procs:
                stop_process(proc)

    assert call.end_reason in ("stream-closed", "twiml-ended") and call.status == "completed"
    by_call = assert_log_consistent(history, doc)
    on_log = {e.event_id for e in history}
    assert before_kill <= on_log  # published before the kill: kept
    assert not [e for e in history if isinstance(e, ev.CallEnded)]  # the gateway died without a word
    assert [e.status for e in history if isinstance(e, ev.CallStatusChanged)][-1] == "completed"
    row = doc["providers"][0]
    # Terminal, with the partial transcript as published, in order.
    assert 3 <= len(row["transcript"]) < len(persona.turns)
    assert row["transcript"] == lines(persona, len(row["transcript"]))
    assert len(by_call[call.sid]) == len(row["transcript"])
    price = next(e for e in history if isinstance(e, ev.PriceExtracted))
    assert price.call_sid == call.sid


def short_call() -> Persona:
    return Persona(business="Quick Fix", phone="+14155550111", ms_per_char=12, turns=(
        Turn("provider", "Hello?"),
        Turn("agent", "Hi, is this {business}?"),
        Turn("provider", "Yes, but we are closed today, sorry."),
        Turn("agent", "I understand. Thanks for your time, goodbye!", tools=(ToolCall("end_call", {}),)),
    ))


@pytest.mark.slow
async def test_sigterm_drains_live_calls_then_ends_the_rest(nc, nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    quick, slow = short_call(), joe(ms_per_char=40)
    book = PersonaBook([quick, slow])
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    drain_s = 8.0
    async with TwilioStandin(book, SIM_ACCOUNT_SID, SIM_AUTH_TOKEN) as twilio, \
            RealtimeStandin(book, api_key=SIM_XAI_KEY) as realtime, \
            XaiChatStandin(mode="ok", api_key=SIM_XAI_KEY) as chat, collect(nc, "drain1") as (events, changed):
        env = process_env(nats_server.url, twilio, realtime, public, GATEWAY_DRAIN_SECONDS=str(drain_s))
        gateway = run_gateway(tmp_path, "gateway", env, port)
        system = await start_system(system_settings(tmp_path, twilio, realtime, chat, public_base_url=public),
                                    ["projector", "dispatcher", "extractor"], nats_url=nats_server.url,
                                    service_options={"extractor": {"gateway_grace_s": 1.0}})
        try:
            await wait_healthy(port)
            await start_job(system.base_url, "drain1", [quick, slow])
            w = World(system=system, twilio=twilio, realtime=realtime, nc=nc, events=events, changed=changed)
            first = await w.wait_for(lambda e: isinstance(e, ev.UtteranceTranscribed), 30)
            await w.wait_for(lambda e: isinstance(e, ev.UtteranceTranscribed) and e.call_sid != first.call_sid, 30)
            assert await live_calls(port) == 2
            loop = asyncio.get_running_loop()
            gateway.send_signal(signal.SIGTERM)
            sigterm_at = loop.time()
            # While draining: no new stream, no new TwiML (Twilio and the balancer go elsewhere).
            twiml_status, close_code = await refused_while_draining(public, port)
            quick_end = await w.wait_for(lambda e: isinstance(e, ev.CallEnded) and e.reason != "shutdown", 15)
            slow_end = await w.wait_for(lambda e: isinstance(e, ev.CallEnded) and e.reason == "shutdown", 15)
            slow_end_at = loop.time()
            exit_code = await asyncio.wait_for(asyncio.to_thread(gateway.wait), 20)
            await twilio.wait_all_ended(timeout=10)
            doc = await settled(system.base_url, "drain1")
            history = await bus.job_history(nc.jetstream(), "drain1")
        finally:
            await system.stop(5)
            stop_process(gateway)

    assert twiml_status == 503 and close_code == 1013
    assert isinstance(quick_end, ev.CallEnded) and quick_end.reason == "end_call"  # finished on its own
    assert isinstance(slow_end, ev.CallEnded)
    # Ended by the deadline ("shutdown"), not before it; how long after it depends on the load (the wait above
    # bounds it).
    assert slow_end.reason == "shutdown" and slow_end_at - sigterm_at >= 0.7 * drain_s
    assert exit_code == 0
    by_call = assert_log_consistent(history, doc)
    rows = {r["service_provider"]: r for r in doc["providers"]}
    assert rows["Quick Fix"]["transcript"] == lines(quick) and rows["Quick Fix"]["end_reason"] == "end_call"
    slow_row = rows[slow.business]
    assert slow_row["end_reason"] == "shutdown"
    assert 2 <= len(slow_row["transcript"]) < len(slow.turns)
    said, expected = slow_row["transcript"], lines(slow, len(slow_row["transcript"]))
    assert said[:-1] == expected[:-1]
    # The deadline may fall while our agent speaks: its last line is then what the callee heard of it, a prefix.
    last, full = said[-1], expected[-1]
    assert last == full or (last["role"] == full["role"] == "assistant" and last["text"]
                            and full["text"].startswith(last["text"]))
    assert len(by_call[slow_end.call_sid]) == slow_end.utterances
    slow_call = next(c for c in twilio.calls if c.sid == slow_end.call_sid)
    assert slow_call.updates == [{"Status": "completed"}]  # hung up by the gateway at the deadline


async def refused_while_draining(public: str, port: int) -> tuple[int, int | None]:
    """A signed TwiML request and a media stream start, as Twilio would send them for a new call."""
    url = f"{public}/twiml?call_id=c_new"
    params = {"CallSid": "CA" + "1" * 32, "AccountSid": SIM_ACCOUNT_SID, "CallStatus": "in-progress"}
    signature = RequestValidator(SIM_AUTH_TOKEN).compute_signature(url, params)
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        twiml = await http.post(url, data=params, headers={"X-Twilio-Signature": signature})
    async with websockets.connect(f"ws://127.0.0.1:{port}/media-stream", proxy=None, open_timeout=5) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await asyncio.wait_for(ws.recv(), 5)
        code = ws.close_code
    return twiml.status_code, code
