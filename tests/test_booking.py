"""Booking through the real services and stand-ins: `POST /jobs/{id}/book` is refused while the job negotiates and
for bad requests. Once the job completed, the job page's Book button calls the best offer back (a new round with
the booking in its call context); a business that cannot fit the homeowner's windows leaves the booking `failed`.
Booked again with `POST /jobs/{id}/book`, it confirms an appointment (`record_booking`). The job document and
`haggle events replay --job` show each step."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from haggle_contracts import events as ev
from haggle_contracts import subjects
from haggle_contracts.calls import decode_context
from haggle_sim.personas import PersonaBook, ToolCall, Turn, negotiation
from waits import ACCEPTED, job_body, kv_entries, running_world, settled, wait_job_completed

from haggle import bus
from haggle.config import Settings

HAGGLE = str(Path(sys.executable).parent / "haggle")
WINDOWS = ["Sat Jan 10, 8am-12pm", "Mon Jan 12, after 3pm"]

BOOKED_OUT = (
    Turn("provider", "Hello?"),
    Turn("agent", "Hi, is this {business}? It's about the leaking kitchen faucet I called about earlier."),
    Turn("provider", "Oh yes, hi."),
    Turn("agent", "We'd like to book the repair at the $175 we agreed, on Saturday morning or Monday after 3pm."),
    Turn("provider", "Sorry, we're booked out both of those days."),
    Turn("agent", "I understand. Thanks for your time, goodbye!",
         tools=(ToolCall("record_booking", {"confirmed": False, "notes": "booked out"}),
                ToolCall("end_call", {"reason": "no slot"}))),
)
CONFIRMS = (
    Turn("provider", "Hello?"),
    Turn("agent", "Hi, is this {business}? It's about the leaking kitchen faucet I called about earlier."),
    Turn("provider", "Oh yes, hi."),
    Turn("agent", "We'd like to book the repair at the $175 we agreed. Could you come Tuesday?"),
    Turn("provider", "Tuesday at 10am works, at one seventy five."),
    Turn("agent", "Tuesday January 13 at 10am. Great, that works for us. Thank you, goodbye!",
         tools=(ToolCall("record_booking", {"confirmed": True, "appointment": "Tue Jan 13, 10am", "price": 175}),
                ToolCall("end_call", {"reason": "booked"}))),
)


async def wait_booking(api: str, job_id: str, status: str, timeout_s: float) -> dict:  # type: ignore[type-arg]
    async def poll() -> dict:  # type: ignore[type-arg]
        async with httpx.AsyncClient(base_url=api, timeout=10) as http:
            while True:
                doc = (await http.get(f"/jobs/{job_id}")).json()
                if doc.get("booking_status") == status:
                    return doc  # type: ignore[no-any-return]
                await asyncio.sleep(0.1)  # polling an HTTP read model: there is nothing to await

    return await asyncio.wait_for(poll(), timeout_s)


@pytest.mark.slow
async def test_booking_is_refused_until_complete_then_calls_the_best_offer_back(nc, nats_server,
                                                                                tmp_path: Path) -> None:
    joe = negotiation("Joe's Plumbing", "+14155550301", first_quote=200, counter=150, final=175, ms_per_char=8)
    bay = negotiation("Bay Pipe Pros", "+14155550302", first_quote=250, counter=150, final=180, ms_per_char=8)
    cast = [replace(joe, callbacks=(BOOKED_OUT, CONFIRMS)), bay]
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'b.db'}", calling_hours=None,
                        port=0, negotiation_strategy="market")
    async with running_world(settings, PersonaBook(cast), nats_server.url) as (world, system):
        async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
            assert (await http.post("/jobs", json=job_body("bk", cast, ids="b"))).status_code in ACCEPTED
            early = await http.post("/jobs/bk/book", json={})
            assert early.status_code == 409 and "still negotiating" in early.json()["detail"]
            assert (await http.post("/jobs/nojob/book", json={})).status_code == 404
            await wait_job_completed(nc, "bk", timeout=90)
            bad = await http.post("/jobs/bk/book", json={"windows": ["\x00"], "when": "now"})
            assert bad.status_code == 422
            assert (await http.post("/jobs/bk/book", json={"provider_id": "nobody"})).status_code == 404
            # The job page's Book button: the best offer, inside the windows typed one per line.
            page = (await http.get("/ui/jobs/bk")).text
            assert 'id="book"' in page and "Book Joe&#x27;s Plumbing at $175" in page
            refused = await http.post("/ui/jobs/bk/book", data={"windows": "x" * 300})
            assert refused.status_code == 409 and "at most 200 characters" in refused.text
            pressed = await http.post("/ui/jobs/bk/book", data={"windows": "\n".join(WINDOWS)})
            assert pressed.status_code == 303 and pressed.headers["location"] == "/ui/jobs/bk"
            again = await http.post("/jobs/bk/book", json={})
            assert again.status_code == 409 and "already requested" in again.json()["detail"]
            doc = await wait_booking(system.base_url, "bk", "failed", timeout_s=60)
            page = (await http.get("/ui/jobs/bk")).text
            assert 'data-booking-status="failed"' in page and 'id="book"' in page  # it can be booked again
            # Booked again through the API, for another day: this time the business confirms.
            booked = await http.post("/jobs/bk/book", json={"windows": ["Tue Jan 13, any time"]})
            assert booked.status_code == 202, booked.text
            assert booked.json() == {"status": "requested", "job_id": "bk", "provider_id": "b0", "price": 175,
                                     "windows": ["Tue Jan 13, any time"]}
            confirmed = await wait_booking(system.base_url, "bk", "confirmed", timeout_s=60)
            assert confirmed["best_offer"]["provider_id"] == "b0"  # the agreement stands during the call
            confirmed = await settled(system.base_url, "bk", timeout_s=30)
            page = (await http.get("/ui/jobs/bk")).text
            assert 'data-booking-status="confirmed"' in page and "Tue Jan 13, 10am" in page
            assert 'id="book"' not in page  # booked: no second booking
        contexts = [decode_context(v) for v in (await kv_entries(nc.jetstream(), subjects.KV_CALLS)).values()]
    dialed = [c.params["To"][0] for c in world.twilio.calls]  # type: ignore[attr-defined]

    assert dialed.count(joe.phone) == 3 and dialed.count(bay.phone) == 1  # the booking calls went to the best
    # Both booking calls keep their own context; the listing's order is the keys', so pick each by round.
    bookings = {c.round: c.booking for c in contexts if c.provider_id == "b0" and c.booking is not None}
    assert sorted(bookings) == [2, 3]
    assert (bookings[2].price, bookings[2].windows) == (175, WINDOWS)
    assert (bookings[3].price, bookings[3].windows) == (175, ["Tue Jan 13, any time"])
    rows = {p["id"]: p for p in doc["providers"]}
    assert (doc["booking_status"], doc["booking_provider_id"], doc["appointment"]) == ("failed", "b0", None)
    # Failing to book keeps the agreed price: the business still quoted it.
    assert (rows["b0"]["outcome"], rows["b0"]["negotiated_price"], rows["b0"]["round"]) == ("agreed", 175, 2)
    history = await bus.job_history(nc.jetstream(), "bk")
    dial = next(e for e in history if isinstance(e, ev.DialScheduled) and e.reason == "booking")
    assert (dial.provider_id, dial.round, dial.attempt) == ("b0", 2, 2)
    out = subprocess.run([HAGGLE, "events", "replay", "--job", "bk"], env={**os.environ, "NATS_URL": nats_server.url},
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "BookingRequested" in out and "$175 in: Sat Jan 10, 8am-12pm; Mon Jan 12, after 3pm" in out
    assert "attempt 2 (booking) round 2" in out and "attempt 3 (booking) round 3" in out
    assert "not confirmed (booked out)" in out and "confirmed Tue Jan 13, 10am" in out
    assert (confirmed["booking_status"], confirmed["booking_provider_id"], confirmed["appointment"]) == (
        "confirmed", "b0", "Tue Jan 13, 10am")
    assert confirmed["best_offer"]["price"] == 175  # booking confirmed the agreed price, it did not change it
    second = [e for e in history if isinstance(e, ev.BookingRequested)][1]
    assert (second.request, second.windows) == (2, ["Tue Jan 13, any time"])
