"""A simulated world for `haggle demo` and `haggle up --simulate`: Twilio, the realtime model and xAI chat
stand-ins on loopback, with settings that point the real services (and the real `twilio` SDK and
WebSocket client) at them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from haggle_sim.personas import PersonaBook, demo_personas

from .config import Settings
from .nats_embedded import free_port

SIM_ACCOUNT_SID = "AC" + "5" * 32
SIM_AUTH_TOKEN = "simulated-auth-token"
SIM_FROM = "+14155550100"
SIM_XAI_KEY = "simulated-xai-key"


@dataclass
class World:
    settings: Settings
    personas: PersonaBook
    twilio: object
    realtime: object
    chat: object
    systems: list[object] = field(default_factory=list)

    def attach(self, system: object) -> None:
        self.systems.append(system)


@contextlib.asynccontextmanager
async def simulated_world(settings: Settings, personas: PersonaBook | None = None) -> AsyncIterator[World]:
    from haggle_sim.realtime_standin import RealtimeStandin
    from haggle_sim.twilio_standin import TwilioStandin
    from haggle_sim.xai_chat_standin import XaiChatStandin

    personas = personas or demo_personas()
    port = settings.port or free_port()
    async with contextlib.AsyncExitStack() as stack:
        twilio = await stack.enter_async_context(
            # The gateway listens on plain loopback here, so the stand-in is told ws:// streams are fine.
            TwilioStandin(personas=personas, account_sid=SIM_ACCOUNT_SID, auth_token=SIM_AUTH_TOKEN,
                          allow_insecure_streams=True)
        )
        realtime = await stack.enter_async_context(RealtimeStandin(personas=personas, api_key=SIM_XAI_KEY))
        chat = await stack.enter_async_context(XaiChatStandin(mode="ok", api_key=SIM_XAI_KEY))
        sim = settings.with_(
            port=port,
            public_base_url=f"http://127.0.0.1:{port}",
            allow_insecure_public_url=True,  # the stand-ins listen on plain loopback
            twilio_account_sid=SIM_ACCOUNT_SID,
            twilio_auth_token=SIM_AUTH_TOKEN,
            twilio_phone_number=SIM_FROM,
            twilio_api_base_url=twilio.base_url,
            xai_api_key=SIM_XAI_KEY,
            xai_realtime_url=realtime.url,
            xai_api_base_url=chat.base_url,
            calling_hours=None,
            silence_timeout_s=10.0,
        )
        yield World(settings=sim, personas=personas, twilio=twilio, realtime=realtime, chat=chat)
