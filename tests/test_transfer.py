"""The homeowner on demand, through the real services: a business that will only book with the homeowner gets
`transfer_to_homeowner`; the agent says so, the call's TwiML becomes a `<Dial>` of the job's `homeowner_phone` with
a one-line whisper, and Twilio (the stand-in) bridges them. A homeowner who does not answer sends the call back to
the agent on a new stream, which closes politely and hangs up. Each transfer is a `HomeownerTransfer` event."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from haggle_contracts import events as ev
from haggle_gateway.transfer import FALLBACK_LINE
from haggle_sim.personas import Persona, PersonaBook, ToolCall, Turn
from waits import ACCEPTED, JobWatch, job_body, running_world

from haggle.config import Settings

HOMEOWNER = "+14155550177"
AWAY = "+14155550178"


def owner_only(business: str, phone: str) -> Persona:
    return Persona(business=business, phone=phone, ms_per_char=12, turns=(
        Turn("provider", "Hello?"),
        Turn("agent", "Hi, is this {business}?"),
        Turn("provider", "Yes. We only book jobs with the homeowner directly. Can I talk to them?"),
        Turn("agent", "Sure, let me connect you with the homeowner, one moment.",
             tools=(ToolCall("transfer_to_homeowner", {"reason": "booking"}),)),
        Turn("provider", "Okay, I'll hold."),
    ))


def transfer_of(job_id: str) -> Callable[[ev.Event], bool]:
    return lambda e: isinstance(e, ev.HomeownerTransfer) and e.job_id == job_id


@pytest.mark.slow
async def test_transfer_connects_and_falls_back(nc, nats_server, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 't.db'}", calling_hours=None,
                        port=0, transfer_ring_s=5)
    reached = owner_only("Book Direct Plumbing", "+14155550191")
    missed = owner_only("Owner Only Plumbing", "+14155550192")
    book = PersonaBook([reached, missed, Persona(business="Pat Rivera", phone=HOMEOWNER, ring_ms=300),
                        Persona(business="Sam Rivera", phone=AWAY, answer="no-answer")])
    async with running_world(settings, book, nats_server.url) as (world, system):
        async with JobWatch(nc, "t1", "t2") as watch:
            async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
                for job_id, persona, homeowner in (("t1", reached, HOMEOWNER), ("t2", missed, AWAY)):
                    body = job_body(job_id, [persona], ids=f"{job_id}p", homeowner_phone=homeowner)
                    assert (await http.post("/jobs", json=body)).status_code in ACCEPTED
                connected = await watch.until(transfer_of("t1"), 60)
                not_reached = await watch.until(transfer_of("t2"), 60)
            await world.twilio.wait_all_ended(60)  # type: ignore[attr-defined]
    calls = {c.to: c for c in world.twilio.calls}  # type: ignore[attr-defined]

    # The homeowner answered: briefed in one line, bridged, and the call ended with them.
    call = calls[reached.phone]
    assert connected.outcome == "connected" and connected.dial_status == "completed"
    assert connected.call_sid == call.sid and connected.attempt == 1
    dial = call.dials[0]
    assert dial.number == HOMEOWNER and dial.status == "completed" and len(dial.whisper) == 1
    assert "Book Direct Plumbing is on the line about your leaking kitchen faucet request" in dial.whisper[0]
    said = [e.text for e in watch.seen if isinstance(e, ev.UtteranceTranscribed) and e.job_id == "t1"
            and e.role == ev.Role.ASSISTANT]
    assert "let me connect you with the homeowner" in said[-1]  # the agent said so before handing over
    assert len(call.streams) == 1
    # Not answered: the call came back to the agent on a second stream, which closed politely and hung up.
    back = calls[missed.phone]
    assert not_reached.outcome == "not_reached" and not_reached.dial_status == "no-answer"
    assert back.dials[0].status == "no-answer" and back.dials[0].whisper == []
    assert len(back.streams) == 2
    closing = [e for e in watch.seen if isinstance(e, ev.UtteranceTranscribed) and e.job_id == "t2"
               and e.role == ev.Role.ASSISTANT and e.text == FALLBACK_LINE]
    assert closing, [getattr(e, "text", None) for e in watch.seen if e.job_id == "t2"]
    assert back.updates[-1].get("Status") == "completed"  # the agent hung up after its closing line
