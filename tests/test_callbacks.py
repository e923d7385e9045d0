"""Callbacks through the real services: a provider Haggle called phones TWILIO_PHONE_NUMBER back (the Twilio
stand-in's inbound call requests the number's voice URL, signed), the gateway finds the provider from the number,
and the agent takes the call with that provider's context (the job, what was said, the quote) as the provider's
next attempt. A number Haggle never called gets one polite line and a hang-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from haggle_contracts import events as ev
from haggle_gateway.inbound import INBOUND_PATH, UNKNOWN_CALLER_LINE, unknown_caller_twiml
from haggle_sim.callbacks import callback_persona
from haggle_sim.personas import demo_personas
from waits import ACCEPTED, JobWatch, job_body, running_world

from haggle import bus
from haggle.config import Settings
from haggle.simulate import SIM_FROM


def test_unknown_caller_twiml() -> None:
    polite = unknown_caller_twiml("")
    assert "<Say>" in polite and "<Hangup" in polite and "<Dial" not in polite
    assert "<Dial>+14155550199</Dial>" in unknown_caller_twiml("+14155550199")


@pytest.mark.slow
async def test_callback_reaches_the_agent_with_context(nc, nats_server, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'cb.db'}", calling_hours=None,
                        port=0)
    personas = demo_personas(ms_per_char=12)
    drip = next(p for p in personas if p.business == "Drip Masters")
    async with running_world(settings, personas, nats_server.url) as (world, system), JobWatch(nc, "cb1") as watch:
        async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
            assert (await http.post("/jobs", json=job_body("cb1", [drip], ids="d"))).status_code in ACCEPTED
            first = await watch.until(lambda e: isinstance(e, ev.PriceExtracted), 60)
            assert first.outcome == ev.Outcome.NO_AGREEMENT and first.attempt == 1  # type: ignore[attr-defined]
            sessions_before = len(world.realtime.sessions)  # type: ignore[attr-defined]

            # An hour later Drip Masters calls the number back.
            world.personas.add(callback_persona(drip.business, drip.phone, price=180))
            voice_url = world.settings.public_base_url + INBOUND_PATH  # as set in the Twilio console
            call = await world.twilio.inbound_call(drip.phone, SIM_FROM, voice_url)  # type: ignore[attr-defined]
            inbound = await watch.until(lambda e: isinstance(e, ev.InboundCallReceived), 30)
            second = await watch.until(lambda e: isinstance(e, ev.PriceExtracted) and e.attempt == 2, 60)

            async def projected() -> dict:  # type: ignore[type-arg]
                while True:  # the projection trails the log: until it holds the callback's result
                    doc = (await http.get("/jobs/cb1")).json()
                    if doc["providers"][0]["outcome"] == "agreed":
                        return doc  # type: ignore[no-any-return]
                    await asyncio.sleep(0.1)

            try:
                doc = await asyncio.wait_for(projected(), 15)
            except TimeoutError:
                doc = (await http.get("/jobs/cb1")).json()
            page = (await http.get("/ui/jobs/cb1/calls/d0")).text

            # A number Haggle never called: one polite line, then the call ends; nothing on any job.
            stranger = await world.twilio.inbound_call("+14155559999", SIM_FROM, voice_url)  # type: ignore[attr-defined]
            await world.twilio.wait_for_call_end(stranger.sid)  # type: ignore[attr-defined]

    assert inbound.call_sid == call.sid and inbound.from_number == drip.phone  # type: ignore[attr-defined]
    assert inbound.attempt == 2 and inbound.provider_id == "d0"  # type: ignore[attr-defined]
    assert call.twiml_requests[0].status_code == 200 and "<Stream" in call.twiml_documents[0]
    # The agent got the provider's context: the earlier quote and what was said.
    session = world.realtime.sessions[sessions_before]  # type: ignore[attr-defined]
    assert "callback_context" in session.instructions and "This call is a callback" in session.instructions
    assert "Their first quote: $" in session.instructions
    assert "Business: Sorry, I can't go that low." in session.instructions  # what they said on the first call
    # The callback is the provider's second attempt, with its own conversation and result.
    said = [e for e in watch.seen if isinstance(e, ev.UtteranceTranscribed) and e.attempt == 2]
    assert said and said[0].text.startswith("Hi, this is Drip Masters returning your call")
    assert second.outcome == ev.Outcome.AGREED and second.price == 180  # type: ignore[attr-defined]
    row = doc["providers"][0]
    assert row["attempts"] == 2 and row["outcome"] == "agreed" and row["negotiated_price"] == 180
    assert 'data-type="InboundCallReceived"' in page and 'data-attempt="2"' in page
    history = await bus.job_history(nc.jetstream(), "cb1")
    assert [type(e).__name__ for e in history].count("InboundCallReceived") == 1
    assert stranger.said == [UNKNOWN_CALLER_LINE] and stranger.streams == []
