"""Twilio's REST API as it really behaves, through the real dispatcher and gateway with the official SDK against
the Twilio stand-in on loopback: rate limiting with Retry-After, 5xx bursts, a create whose answer is lost in a
client timeout, 400/21220 on hanging up an ended call, and status callbacks out of order and twice."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from pathlib import Path

import httpx
import msgspec
import pytest
from haggle_contracts import events as ev
from haggle_contracts import state as st
from haggle_contracts import subjects
from haggle_dispatcher.service import DialState
from haggle_dispatcher.twilio_dialer import DialError, DialRequest, TwilioDialer, classify, retry_after_seconds
from haggle_gateway.settings import GatewaySettings
from haggle_gateway.twilio_rest import HangupError, TwilioHangup
from haggle_sim.personas import Persona, PersonaBook, negotiation
from haggle_sim.twilio_rest_standin import RestFaults
from haggle_sim.twilio_standin import TwilioStandin
from twilio.base.exceptions import TwilioRestException
from waits import ACCEPTED, kv_entries, settled, wait_job_completed

from haggle import bus
from haggle.config import Settings
from haggle.simulate import SIM_ACCOUNT_SID, SIM_AUTH_TOKEN, SIM_FROM, simulated_world
from haggle.system import start_system


def job_body(job_id: str, personas: list[Persona]) -> dict:  # type: ignore[type-arg]
    return {"job_id": job_id, "problem": "leaking faucet", "zip_code": "94110", "max_price": 200,
            "providers": [{"service_provider": p.business, "phone_number": p.phone} for p in personas]}


def world_settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'p.db'}", port=0,
                    max_call_attempts=1, calling_hours=None, **extra)  # type: ignore[arg-type]


async def run_job(nc, nats_url: str, world, job_id: str, personas: list[Persona], timeout: float = 60):  # type: ignore[no-untyped-def]
    system = await start_system(world.settings, nats_url=nats_url,
                                service_options={"extractor": {"gateway_grace_s": 1.0}})
    try:
        async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
            assert (await http.post("/jobs", json=job_body(job_id, personas))).status_code in ACCEPTED
        await wait_job_completed(nc, job_id, timeout=timeout)
        doc = await settled(system.base_url, job_id, timeout_s=20)
    finally:
        await system.stop(5)
    return doc, await bus.job_history(nc.jetstream(), job_id)


@pytest.mark.slow
async def test_rate_limits_and_server_errors_delay_the_dial_and_honour_retry_after(
        nc, nats_server, tmp_path: Path) -> None:
    busy = Persona(business="Busy Bee Plumbing", phone="+14155558001", answer="busy", ring_ms=100)
    async with simulated_world(world_settings(tmp_path), personas=PersonaBook([busy])) as world:
        faults = world.twilio.api.faults  # type: ignore[attr-defined]
        faults.rate_limited_creates, faults.retry_after_s = 2, 2
        faults.failing_creates = 1
        doc, history = await run_job(nc, nats_server.url, world, "limited", [busy])
        calls = Counter(c.params["To"][0] for c in world.twilio.calls)  # type: ignore[attr-defined]
        created_at = [c.created_at for c in world.twilio.calls]  # type: ignore[attr-defined]
    assert [(f, s) for f, s, _ in faults.served] == [
        ("rate-limited", 429), ("rate-limited", 429), ("server-error", 503)]
    # Retry-After: 2 was waited out after each 429 (a lower bound: load can only make the wait longer).
    times = [t for _, _, t in faults.served] + created_at
    assert times[1] - times[0] >= 2.0 and times[2] - times[1] >= 2.0
    assert calls == {busy.phone: 1}  # the outage delayed the dial; the provider was called once
    assert not any(isinstance(e, ev.DialFailed) for e in history)
    [row] = doc["providers"]
    assert (row["call_status"], row["outcome"], row["attempts"]) == ("failed", "busy", 1)


async def test_an_outage_longer_than_the_window_fails_the_dial_as_transient(nc, nats_server, tmp_path: Path) -> None:
    nobody = Persona(business="Nobody Plumbing", phone="+14155558002", answer="no-answer", ring_ms=100)
    async with simulated_world(world_settings(tmp_path, dial_retry_window_s=2.0),
                               personas=PersonaBook([nobody])) as world:
        world.twilio.api.faults.failing_creates = 1000  # type: ignore[attr-defined]
        doc, history = await run_job(nc, nats_server.url, world, "outage", [nobody])
        assert not world.twilio.calls  # type: ignore[attr-defined]
        served = len(world.twilio.api.faults.served)  # type: ignore[attr-defined]
    [failed] = [e for e in history if isinstance(e, ev.DialFailed)]
    assert failed.permanent is False and "Twilio unavailable" in failed.reason and failed.code == 20500
    assert served >= 2  # retried within the window before giving up
    [row] = doc["providers"]
    assert (row["call_status"], row["outcome"]) == ("failed", "failed")


@pytest.mark.slow
async def test_a_create_lost_in_a_client_timeout_is_adopted_not_placed_again(nc, nats_server, tmp_path: Path) -> None:
    deal = negotiation("Deal Plumbing", "+14155558003", first_quote=200, counter=150, final=175, ms_per_char=10)
    async with simulated_world(world_settings(tmp_path, twilio_http_timeout_s=1.0),
                               personas=PersonaBook([deal])) as world:
        faults = world.twilio.api.faults  # type: ignore[attr-defined]
        # Created at Twilio, but the answer would come after a minute: only a client timeout gets the job done.
        faults.slow_creates, faults.slow_create_s = 1, 60.0
        doc, history = await run_job(nc, nats_server.url, world, "lost", [deal], timeout=45)
        [call] = world.twilio.calls  # type: ignore[attr-defined]
        dials = await kv_entries(nc.jetstream(), subjects.KV_DIALS)
        [key] = [k for k in dials if k.startswith("dial.lost.")]
        record = msgspec.json.decode(dials[key], type=DialState)
    assert faults.served[0][:2] == ("slow-create", 201)
    # The first try timed out (ambiguous), the next looked the call up and adopted it instead of dialling.
    assert (record.state, record.sid, record.tries) == ("dialed", call.sid, 1)
    assert "no answer from Twilio" in (record.last_error or "")
    [dialed] = {e.call_sid for e in history if isinstance(e, ev.CallDialed)}
    assert dialed == call.sid  # the dispatcher adopted the call Twilio had created
    [row] = doc["providers"]
    assert (row["call_status"], row["outcome"], row["negotiated_price"]) == ("completed", "agreed", 175)


@pytest.mark.slow
async def test_status_callbacks_out_of_order_and_twice_leave_the_right_final_state(
        nc, nats_server, tmp_path: Path) -> None:
    deal = negotiation("Deal Plumbing", "+14155558004", first_quote=200, counter=150, final=175, ms_per_char=10)
    nobody = Persona(business="Nobody Plumbing", phone="+14155558005", answer="no-answer", ring_ms=300)
    async with simulated_world(world_settings(tmp_path), personas=PersonaBook([deal, nobody])) as world:
        twilio: TwilioStandin = world.twilio  # type: ignore[assignment]
        twilio.options = dataclasses.replace(twilio.options, disorder_status_callbacks=True)
        doc, history = await run_job(nc, nats_server.url, world, "disorder", [deal, nobody])
        by_number = {c.to: c for c in twilio.calls}
    answered = by_number[deal.phone].callback_statuses()
    assert answered.index("ringing") > answered.index("in-progress") and answered.count("completed") == 2
    unanswered = by_number[nobody.phone].callback_statuses()
    assert unanswered.index("ringing") > unanswered.index("no-answer") and unanswered.count("no-answer") == 2
    rows = {p["service_provider"]: p for p in doc["providers"]}
    assert (rows["Deal Plumbing"]["call_status"], rows["Deal Plumbing"]["negotiated_price"]) == ("completed", 175)
    assert (rows["Nobody Plumbing"]["call_status"], rows["Nobody Plumbing"]["outcome"]) == ("failed", "no_answer")
    folded = st.fold_job(history)
    assert {s.service_provider: s.twilio_status for s in folded.values()} == {
        "Deal Plumbing": "completed", "Nobody Plumbing": "no-answer"}


def gateway_settings(base_url: str) -> GatewaySettings:
    return GatewaySettings(public_base_url="https://gw.example.com", twilio_account_sid=SIM_ACCOUNT_SID,
                           twilio_auth_token=SIM_AUTH_TOKEN, xai_api_key="k", twilio_api_base_url=base_url)


async def test_hanging_up_an_ended_call_answers_21220_and_counts_as_ended() -> None:
    async with TwilioStandin(PersonaBook(), SIM_ACCOUNT_SID, SIM_AUTH_TOKEN, unknown_ring_ms=50) as twilio:
        twilio.api.faults.hangup_ended_21220 = True
        dialer = TwilioDialer(SIM_ACCOUNT_SID, SIM_AUTH_TOKEN, api_base_url=twilio.base_url, timeout_s=5)
        # The SDK blocks: it runs in a thread so the stand-in, on this loop, can answer.
        created = await asyncio.to_thread(dialer.client.calls.create, to="+14155558006", from_=SIM_FROM,
                                          twiml="<Response/>")
        sid = str(created.sid)
        await twilio.wait_for_call_end(sid, timeout=10)
        with pytest.raises(TwilioRestException) as raw:  # what Twilio answers, seen through the SDK
            await asyncio.to_thread(dialer.client.calls(sid).update, status="completed")
        assert (raw.value.status, raw.value.code) == (400, 21220)
        await TwilioHangup(gateway_settings(twilio.base_url))(sid)  # the gateway takes it as "already ended"
        twilio.api.faults = RestFaults(hangup_ended_21220=False)
        await TwilioHangup(gateway_settings(twilio.base_url))(sid)  # and the lenient answer too
        with pytest.raises(HangupError, match="401"):
            wrong = dataclasses.replace(gateway_settings(twilio.base_url), twilio_auth_token="wrong")
            await TwilioHangup(wrong)(sid)


async def test_every_request_has_a_timeout() -> None:
    deal = negotiation("Slow Plumbing", "+14155558007", first_quote=200, counter=150, final=175)
    async with TwilioStandin(PersonaBook([deal]), SIM_ACCOUNT_SID, SIM_AUTH_TOKEN) as twilio:
        twilio.api.faults.slow_creates, twilio.api.faults.slow_create_s = 1, 3.0
        dialer = TwilioDialer(SIM_ACCOUNT_SID, SIM_AUTH_TOKEN, api_base_url=twilio.base_url, timeout_s=0.5)
        assert dialer.client.http_client.timeout == 0.5  # the SDK's own client carries it to every request
        req = DialRequest(call_id="call_x", to=deal.phone, from_=SIM_FROM, public_base_url="http://127.0.0.1:9",
                          ring_timeout_s=25, time_limit_s=900)
        with pytest.raises(DialError) as lost:
            await dialer.dial(req)
        assert lost.value.ambiguous and lost.value.code is None
        [call] = twilio.calls  # created before the stand-in sat on its answer
        after = call.date_created.replace(microsecond=0)
        assert await dialer.find_calls(deal.phone, SIM_FROM, after) == [(call.sid, call.status)]
        assert await dialer.find_calls(deal.phone, "+14155550000", after) == []
        hangup = TwilioHangup(gateway_settings(twilio.base_url), timeout_s=0.5)
        assert hangup._client.http_client.timeout == 0.5  # type: ignore[attr-defined]
        await hangup(call.sid)


def test_retry_after_and_error_classes() -> None:
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    limited = classify(TwilioRestException(429, "/Calls.json", "Too Many Requests", 20429), {"Retry-After": "3"})
    assert (limited.retry_after_s, limited.ambiguous, limited.http_status) == (3.0, False, 429)
    assert classify(TwilioRestException(503, "/Calls.json", "down", 20500), {}).ambiguous
    assert not classify(TwilioRestException(400, "/Calls.json", "bad To", 21211), {}).ambiguous


async def test_a_lost_create_at_the_end_of_the_window_is_adopted_not_failed(nc, nats_server, tmp_path: Path) -> None:
    busy = Persona(business="Late Plumbing", phone="+14155558008", answer="busy", ring_ms=100)
    async with simulated_world(world_settings(tmp_path, twilio_http_timeout_s=1.0, dial_retry_window_s=0.0),
                               personas=PersonaBook([busy])) as world:
        faults = world.twilio.api.faults  # type: ignore[attr-defined]
        faults.slow_creates, faults.slow_create_s = 1, 60.0
        doc, history = await run_job(nc, nats_server.url, world, "late", [busy], timeout=45)
        [call] = world.twilio.calls  # type: ignore[attr-defined]
    assert not any(isinstance(e, ev.DialFailed) for e in history)  # the window was over, but the call existed
    assert [e.call_sid for e in history if isinstance(e, ev.CallDialed)] == [call.sid]
    [row] = doc["providers"]
    assert (row["outcome"], row["attempts"]) == ("busy", 1)
