"""End to end on loopback: the real services, a real nats-server, the official `twilio` SDK and a real WebSocket
client talking to the Twilio and xAI stand-ins. Three providers are called, negotiated with, and reported."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from haggle_contracts import events as ev
from haggle_contracts import fanout
from haggle_sim.personas import demo_personas
from waits import ACCEPTED, JobWatch, job_body, running_world, settled

from haggle import bus
from haggle.config import Settings


@pytest.mark.slow
async def test_three_providers_end_to_end(nc, nats_server, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'e2e.db'}", calling_hours=None,
                        port=0)
    async with running_world(settings, demo_personas(ms_per_char=12), nats_server.url) as (world, system):
        personas = list(world.personas)
        async with JobWatch(nc, "e2e") as watch, httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
            assert (await http.post("/jobs", json=job_body("e2e", personas, ids="p"))).status_code in ACCEPTED
            await watch.until(lambda e: isinstance(e, ev.JobCompleted), 90)
        doc = await settled(system.base_url, "e2e", timeout_s=10)

    by_name = {p["service_provider"]: p for p in doc["providers"]}
    for persona in personas:
        row = by_name[persona.business]
        said = [t["text"] for t in row["transcript"]]
        assert said[0] == persona.turns[0].text  # the callee's hello is kept, first
        assert row["transcript"][1]["role"] == "assistant"
        assert persona.business in said[1]  # the agent's first line names the business
        assert len(said) == len(persona.turns)
        assert row["call_transcript"].splitlines()[0] == f"Provider: {persona.turns[0].text}"
    assert by_name["Joe's Plumbing"]["outcome"] == "agreed" and by_name["Joe's Plumbing"]["negotiated_price"] == 175
    bay = by_name["Bay Pipe Pros"]
    assert bay["negotiated_price"] == 180 and bay["call_status"] == "completed"
    assert by_name["Drip Masters"]["outcome"] == "no_agreement" and by_name["Drip Masters"]["call_status"] == "failed"
    assert doc["best_offer"]["service_provider"] == "Joe's Plumbing" and doc["best_offer"]["price"] == 175
    assert doc["best_offer"]["saving"] == 25

    # The audit view: per provider, CallDialed -> UtteranceTranscribed... -> CallEnded.
    history = await bus.job_history(nc.jetstream(), "e2e")
    for i in range(len(personas)):
        kinds = [type(e).__name__ for e in history if fanout.provider_of(e) == f"p{i}"]
        dialed, ended = kinds.index("CallDialed"), kinds.index("CallEnded")
        utterances = [j for j, k in enumerate(kinds) if k == "UtteranceTranscribed"]
        assert dialed < min(utterances) and max(utterances) < ended
        assert kinds.index("PriceExtracted") > ended
        assert "QuoteRecorded" in kinds  # the record_quote tool, offered to the model during the call
    quotes = [e for e in history if isinstance(e, ev.QuoteRecorded) and e.provider_id == "p0"]
    assert [q.price for q in quotes] == [200, 175] and quotes[-1].agreed is True
    # Each Twilio call was hung up by us after the goodbye, with no protocol violation on the stream.
    for call in world.twilio.calls:  # type: ignore[attr-defined]
        assert call.violations == []
