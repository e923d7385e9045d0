"""An AMD verdict is on the log before the gateway acts on it: a voicemail verdict ends the call, and the CallEnded
that follows must not come before the MachineDetected that caused it (the projection and an audit read the log in
order)."""

from __future__ import annotations

from typing import Any

import httpx
from haggle_contracts import events as ev
from haggle_sim.personas import PersonaBook, negotiation
from test_gateway_harness import GatewayHarness
from twilio.request_validator import RequestValidator

from test_gateway_harness import AUTH_TOKEN  # isort: skip

PERSONA = negotiation("Joe's Plumbing", "+14155550101", first_quote=200, counter=150, final=175, ms_per_char=12)


async def test_an_amd_verdict_is_published_before_the_call_acts_on_it(nc) -> None:  # type: ignore[no-untyped-def]
    async with GatewayHarness(nc, PersonaBook([PERSONA])) as h, httpx.AsyncClient(trust_env=False) as http:
        ctx = h.context(PERSONA, call_sid="CA" + "2" * 32)
        await h.store(ctx)
        order: list[str] = []
        publisher, registry = h.service.deps.publisher, h.service.registry
        # Only the webhook's own path here: the NATS subscription (how other replicas hear it) acts as soon as the
        # server has the message, which already puts it ahead of anything the call publishes next.
        await registry.unsubscribe()
        publish, act = publisher.publish, registry.on_machine_detected

        async def recorded_publish(event: ev.Event, *args: Any, **kwargs: Any) -> Any:
            result = await publish(event, *args, **kwargs)
            if isinstance(event, ev.MachineDetected):
                order.append("on the log")
            return result

        def recorded_act(event: ev.MachineDetected) -> bool:
            order.append("acted on")
            return act(event)

        publisher.publish = recorded_publish  # type: ignore[method-assign]
        registry.on_machine_detected = recorded_act  # type: ignore[method-assign]
        url = f"{h.base_url}/twilio/amd?call_id={ctx.call_id}"
        form = {"CallSid": ctx.call_sid or "", "AnsweredBy": "machine_end_beep", "AccountSid": "AC1"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
        response = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
        assert response.status_code == 204
        await h.wait_for_event(lambda e: isinstance(e, ev.MachineDetected))
        assert order == ["on the log", "acted on"]
