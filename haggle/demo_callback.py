"""The demo's callback (docs/twilio-inbound.md): after the job, a provider that did not agree phones Haggle's
number back; the agent takes the call with that provider's context and closes the deal it could not close."""

from __future__ import annotations

import asyncio
from typing import Any

from haggle_contracts import events as ev
from haggle_sim.callbacks import callback_persona

from .simulate import SIM_FROM, World

CALLBACK_PRICE = 185


async def provider_calls_back(world: World, doc: dict[str, Any], seen: list[ev.Event], changed: asyncio.Event,
                              *, timeout_s: float = 60.0) -> bool:
    """Play one callback from the first provider without an agreement; True once its new attempt is extracted."""
    row = next((p for p in doc["providers"] if p["outcome"] == "no_agreement"), None)
    if row is None:
        return False
    print(f"\n{row['service_provider']} calls {SIM_FROM} back...", flush=True)
    world.personas.add(callback_persona(row["service_provider"], row["phone_number"], price=CALLBACK_PRICE))
    voice_url = f"{world.settings.public_base_url}/twilio/inbound"  # the number's voice URL in the Twilio console
    await world.twilio.inbound_call(row["phone_number"], SIM_FROM, voice_url)  # type: ignore[attr-defined]

    async def extracted() -> None:
        while not any(isinstance(e, ev.PriceExtracted) and e.provider_id == row["id"] and e.attempt > row["attempts"]
                      for e in seen):
            changed.clear()
            await changed.wait()

    try:
        await asyncio.wait_for(extracted(), timeout_s)
    except TimeoutError:
        print(f"demo: the callback was not settled within {timeout_s:.0f}s")
        return False
    return True
