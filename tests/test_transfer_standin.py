"""The Twilio stand-in's `<Dial>` transfers, driven by the official SDK over loopback: the dialled party (a
persona owning the number) answers, hears the `<Number url>` whisper, is bridged, and the `action` URL learns
`DialCallStatus=completed`; a party that does not answer gives `no-answer`, and the TwiML the action answers runs
on the original call (the way a transfer falls back to the agent). Every request is signed like Twilio's."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from haggle_sim.http_server import serve_app
from haggle_sim.personas import Persona, PersonaBook, demo_personas
from haggle_sim.twilio_standin import TwilioStandin
from twilio.request_validator import RequestValidator
from twilio.rest import Client

ACCOUNT = "AC" + "8" * 32
TOKEN = "transfer-token"
FROM = "+14155550100"
HOMEOWNER = "+14155550177"
AWAY = "+14155550178"
WHISPER = "Connecting you with Joe's Plumbing about your leaking faucet."


async def test_dial_transfer_connects_and_falls_back() -> None:
    provider = next(iter(demo_personas(ms_per_char=12)))
    book = PersonaBook([provider, Persona(business="Homeowner", phone=HOMEOWNER, ring_ms=300),
                        Persona(business="Homeowner away", phone=AWAY, answer="no-answer")])
    validator = RequestValidator(TOKEN)
    seen: dict[str, list[dict[str, str]]] = {"whisper": [], "action": []}
    done = asyncio.Event()
    hook = FastAPI()

    async def signed(request: Request) -> dict[str, str] | None:
        form = {k: str(v) for k, v in (await request.form()).items()}
        ok = validator.validate(str(request.url), form, request.headers.get("x-twilio-signature", ""))
        return form if ok else None

    @hook.post("/whisper")
    async def whisper(request: Request) -> Response:
        form = await signed(request)
        if form is None:
            return Response(status_code=403)
        seen["whisper"].append(form)
        return Response(f"<Response><Say>{WHISPER}</Say></Response>", media_type="application/xml")

    @hook.post("/dial-done")
    async def dial_done(request: Request) -> Response:
        form = await signed(request)
        if form is None:
            return Response(status_code=403)
        seen["action"].append(form)
        done.set()
        back = "<Say>Sorry, the homeowner did not answer.</Say>" if form["DialCallStatus"] != "completed" else ""
        return Response(f"<Response>{back}<Hangup/></Response>", media_type="application/xml")

    async with TwilioStandin(personas=book, account_sid=ACCOUNT, auth_token=TOKEN) as twilio, \
            serve_app(hook, "127.0.0.1", 0, name="transfer hooks") as served:
        client = Client(ACCOUNT, TOKEN)
        client.api.base_url = twilio.base_url

        async def transfer_to(number: str) -> Any:
            twiml = (f'<Response><Dial action="{served.base_url}/dial-done" timeout="2">'
                     f'<Number url="{served.base_url}/whisper">{number}</Number></Dial></Response>')
            created = await asyncio.to_thread(client.calls.create, to=provider.phone, from_=FROM, twiml=twiml)
            return await twilio.wait_for_call_end(created.sid, timeout=30)

        connected = await transfer_to(HOMEOWNER)
        fell_back = await transfer_to(AWAY)

    dial = connected.dials[0]
    assert dial.number == HOMEOWNER and dial.status == "completed" and dial.whisper == [WHISPER]
    assert seen["whisper"][0]["ParentCallSid"] == connected.sid and seen["whisper"][0]["To"] == HOMEOWNER
    first, second = seen["action"]
    assert first["CallSid"] == connected.sid and first["DialCallStatus"] == "completed"
    assert first["DialBridged"] == "true" and int(first["DialCallDuration"]) >= 1
    assert connected.said == []
    assert second["CallSid"] == fell_back.sid and second["DialCallStatus"] == "no-answer"
    assert fell_back.dials[0].whisper == [] and len(seen["whisper"]) == 1  # nobody answered to hear it
    assert fell_back.said == ["Sorry, the homeowner did not answer."]  # the action's TwiML ran on the call
