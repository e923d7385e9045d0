"""The gateway's shared-state edges on real servers: the KV token claim, AMD across replicas, prewarms,
the REST hang-up, and the realtime client's handshake variants."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from haggle_contracts import events as ev
from haggle_contracts import subjects
from haggle_contracts.calls import CallContext, ctx_key, decode_context, encode_context
from haggle_gateway import prompt
from haggle_gateway import realtime_events as rt
from haggle_gateway.contexts import CallContexts, ClaimRejected
from haggle_gateway.live_calls import LiveCalls
from haggle_gateway.realtime_client import RealtimeClient, RealtimeError, realtime_url
from haggle_gateway.settings import GatewaySettings
from haggle_gateway.twilio_rest import HangupError, TwilioHangup
from haggle_sim.personas import PersonaBook, negotiation
from haggle_sim.realtime_standin import RealtimeStandin
from haggle_sim.twilio_standin import TwilioStandin
from test_gateway_harness import ACCOUNT_SID, AUTH_TOKEN, XAI_KEY

from haggle import bus


def context(call_sid: str | None = "CA" + "1" * 32) -> CallContext:
    return CallContext(call_id=f"c_{secrets.token_hex(4)}", job_id="j1", provider_id="p1", attempt=1,
                       service_provider="Joe's Plumbing", phone_number="+14155550101", problem="faucet",
                       zip_code="94110", max_price=180.0, token=secrets.token_urlsafe(32), call_sid=call_sid)


async def test_token_claim_is_single_use_even_under_a_race(nc) -> None:  # type: ignore[no-untyped-def]
    kv = await nc.jetstream().key_value(subjects.KV_CALLS)
    contexts = CallContexts(kv, call_sid_wait_s=1.0)
    ctx = context()
    await kv.put(ctx_key(ctx.call_id), encode_context(ctx))
    results = await asyncio.gather(*(contexts.claim(ctx.call_id, ctx.token, ctx.call_sid or "") for _ in range(5)),
                                   return_exceptions=True)
    winners = [r for r in results if isinstance(r, CallContext)]
    losers = [r for r in results if isinstance(r, ClaimRejected)]
    assert len(winners) == 1 and winners[0].token_used
    assert {r.reason for r in losers} == {"replay"} and len(losers) == 4
    stored = decode_context((await kv.get(ctx_key(ctx.call_id))).value)
    assert stored.token_used


async def test_claim_waits_for_the_dispatchers_call_sid(nc) -> None:  # type: ignore[no-untyped-def]
    kv = await nc.jetstream().key_value(subjects.KV_CALLS)
    contexts = CallContexts(kv, call_sid_wait_s=3.0)
    ctx = context(call_sid=None)
    await kv.put(ctx_key(ctx.call_id), encode_context(ctx))

    async def dispatcher_stores_sid() -> None:
        await asyncio.sleep(0.3)  # the dispatcher's calls.create round trip
        ctx.call_sid = "CA" + "5" * 32
        await kv.put(ctx_key(ctx.call_id), encode_context(ctx))

    writer = asyncio.create_task(dispatcher_stores_sid())
    claimed = await contexts.claim(ctx.call_id, ctx.token, "CA" + "5" * 32)
    await writer
    assert claimed.call_sid == "CA" + "5" * 32 and claimed.token_used


async def test_claim_gives_up_without_a_call_sid_and_checks_it(nc) -> None:  # type: ignore[no-untyped-def]
    kv = await nc.jetstream().key_value(subjects.KV_CALLS)
    contexts = CallContexts(kv, call_sid_wait_s=0.3)
    pending = context(call_sid=None)
    await kv.put(ctx_key(pending.call_id), encode_context(pending))
    with pytest.raises(ClaimRejected) as info:
        await contexts.claim(pending.call_id, pending.token, "CA" + "6" * 32)
    assert info.value.reason == "sid_timeout"
    known = context()
    await kv.put(ctx_key(known.call_id), encode_context(known))
    for call_id, token, sid, reason in [
        (known.call_id, known.token, "CA" + "7" * 32, "wrong_call_sid"),
        (known.call_id, "", known.call_sid, "bad_token"),
        ("no.such.call", known.token, known.call_sid, "unknown_call"),
        (None, known.token, known.call_sid, "unknown_call"),
    ]:
        with pytest.raises(ClaimRejected) as info:
            await contexts.claim(call_id, token, sid or "")
        assert info.value.reason == reason
    assert decode_context((await kv.get(ctx_key(known.call_id))).value).token_used is False


class FakeCall:
    """A live call as the registry sees it (the registry's reaction is what is under test)."""

    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self.ended: list[str] = []
        self.ended_event = asyncio.Event()
        self.verdicts: list[str] = []
        self.verdict_event = asyncio.Event()

    def machine_verdict(self, answered_by: str) -> None:
        self.verdicts.append(answered_by)
        self.verdict_event.set()

    def request_end(self, reason: str) -> None:
        self.ended.append(reason)
        self.ended_event.set()

    async def wait_closed(self) -> None:
        await self.ended_event.wait()


async def test_amd_verdicts_published_anywhere_reach_calls_held_here(nc) -> None:  # type: ignore[no-untyped-def]
    """Replica A got the AMD webhook and published; replica B holds the stream and hands the verdict to the call
    (a verdict is evidence: the call decides whether it is a voicemail, tests/test_bridge_phases.py)."""
    replica_b = LiveCalls()
    await replica_b.subscribe_amd(nc)
    machine, person, early = FakeCall("CA_machine"), FakeCall("CA_person"), FakeCall("CA_early")
    replica_b.register(machine)
    replica_b.register(person)
    publisher = bus.Publisher(nc.jetstream())
    # One subscription delivers in order: once the last verdict acted, the earlier ones were handled too.
    for sid, answered_by in (("CA_early", "fax"), ("CA_person", "human"), ("CA_machine", "machine_start")):
        await publisher.publish(ev.MachineDetected(event_id=f"amd-{sid}", job_id="j1", provider_id="p1", attempt=1,
                                                   call_sid=sid, answered_by=answered_by))
    await asyncio.wait_for(machine.verdict_event.wait(), 5)
    assert machine.verdicts == ["machine_start"] and machine.ended == []
    # The verdict for a call whose stream had not started yet is remembered until it does.
    replica_b.register(early)
    assert early.verdicts == ["fax"] and person.verdicts == [] and person.ended == []
    await replica_b.unsubscribe()


async def test_drain_waits_then_ends_what_is_left() -> None:
    registry = LiveCalls()
    quick, stubborn = FakeCall("CA_q"), FakeCall("CA_s")
    registry.register(quick)
    registry.register(stubborn)
    asyncio.get_running_loop().call_later(0.05, quick.request_end, "end_call")  # finishes on its own
    await registry.drain(0.5)
    assert quick.ended == ["end_call"] and stubborn.ended == ["shutdown"]


def gw_settings(**overrides: object) -> GatewaySettings:
    values: dict[str, object] = {"public_base_url": "http://127.0.0.1:9", "twilio_account_sid": ACCOUNT_SID,
                                 "twilio_auth_token": AUTH_TOKEN, "xai_api_key": XAI_KEY}
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


async def test_rest_hangup_through_the_sdk() -> None:
    persona = negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175)
    async with TwilioStandin(PersonaBook([persona]), ACCOUNT_SID, AUTH_TOKEN) as twilio:
        hangup = TwilioHangup(gw_settings(twilio_api_base_url=twilio.base_url))
        await hangup("CA" + "0" * 32)  # unknown / already ended: 20404 counts as success
        wrong = TwilioHangup(gw_settings(twilio_api_base_url=twilio.base_url, twilio_auth_token="wrong"))
        with pytest.raises(HangupError, match="401"):
            await wrong("CA" + "0" * 32)


def session_for(settings: GatewaySettings) -> dict[str, object]:
    ctx = context()
    brief = prompt.CallBrief.from_context(ctx)
    return rt.session_config(settings, prompt.build_instructions(brief), prompt.tools())


@pytest.mark.parametrize("handshake", ["session.created", "conversation.created"])
async def test_realtime_client_handshakes(handshake: str) -> None:
    async with RealtimeStandin(PersonaBook(), api_key=XAI_KEY, handshake=handshake, ping_interval_s=0.05) as standin:
        settings = gw_settings(xai_realtime_url=standin.url)
        client = await RealtimeClient.open(settings, session_for(settings))
        try:
            assert client.first_event == handshake
            assert rt.session_audio_format(client.session, "output") == "audio/pcmu"
            session = standin.sessions[0]
            assert session.query == {"model": settings.realtime_model}
            assert session.session["voice"] == "Rex" and "Joe's Plumbing" in session.instructions
            await client.send(rt.response_cancel())
            event = await asyncio.wait_for(_first_non_ping(client), 5)
            assert isinstance(event, rt.ErrorEvent) and event.benign
        finally:
            await client.close()


async def _first_non_ping(client: RealtimeClient) -> rt.ServerEvent:
    while True:
        event = await client.recv()
        if event.type != "ping":
            return event


async def test_realtime_client_fails_fast_and_clearly() -> None:
    async with RealtimeStandin(PersonaBook(), api_key=XAI_KEY, reject_auth=True) as standin:
        settings = gw_settings(xai_realtime_url=standin.url)
        with pytest.raises(RealtimeError, match="401"):
            await RealtimeClient.open(settings, session_for(settings))
    settings = gw_settings(xai_realtime_url="ws://127.0.0.1:9/v1/realtime", realtime_connect_timeout_s=2)
    with pytest.raises(RealtimeError):
        await RealtimeClient.open(settings, session_for(settings))


def test_model_goes_in_the_query_string_once() -> None:
    assert realtime_url("wss://api.x.ai/v1/realtime", "m1") == "wss://api.x.ai/v1/realtime?model=m1"
    assert realtime_url("wss://h/v1/realtime?model=pinned", "m1") == "wss://h/v1/realtime?model=pinned"
    assert realtime_url("wss://h/v1/realtime?model=x&a=1", "m1", with_model=False) == "wss://h/v1/realtime?a=1"


async def test_prewarm_pool_hands_over_once_and_expires() -> None:
    async with RealtimeStandin(PersonaBook(), api_key=XAI_KEY) as standin:
        settings = gw_settings(xai_realtime_url=standin.url)
        registry = LiveCalls(prewarm_ttl_s=0.3)
        pool = registry.prewarms
        assert pool.start("c1", lambda: RealtimeClient.open(settings, session_for(settings)))
        assert not pool.start("c1", lambda: RealtimeClient.open(settings, session_for(settings)))  # re-fetch
        client = await pool.take("c1", 5)
        assert client is not None and await pool.take("c1", 5) is None
        await client.close()
        assert pool.start("c2", lambda: RealtimeClient.open(settings, session_for(settings)))
        second = await standin.wait_for_session(1, timeout_s=5)
        await second.wait_for(lambda: second.closed, timeout_s=5)
        assert pool.expired == 1 and "c2" not in pool
        assert standin.connections == 2
