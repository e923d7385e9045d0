"""Handing a call to the homeowner (`transfer_to_homeowner`), a warm transfer with `<Dial>` (docs/twilio-transfer.md).

1. The business insists on the homeowner; the agent says it will connect them and calls the tool. The homeowner's
   number is the job's `homeowner_phone` (read from the job's JobStarted on the log); without one the tool says
   so, the event says `unavailable`, and the agent closes as usual.
2. Once that line has played, the call's TwiML is replaced (REST update) with `<Dial action=...>` of the homeowner;
   `<Number url=...>` plays the homeowner a one-line brief before the two are bridged.
3. Twilio reports how the dial ended at the action URL. Bridged: the call ends when they hang up (`connected`).
   Not reached: the call comes back to the agent on a new media stream, which says one polite closing line and
   hangs up (`not_reached`).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlencode

from haggle_contracts import events as ev
from haggle_contracts import subjects
from haggle_contracts.calls import CallContext
from nats.js import JetStreamContext
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from haggle import bus

from .settings import GatewaySettings

log = logging.getLogger(__name__)

TOOL = "transfer_to_homeowner"
ACTION_PATH = "/twilio/transfer"
WHISPER_PATH = "/twilio/transfer/whisper"
FALLBACK_LINE = ("Sorry, the homeowner didn't pick up. They'll call you back soon. "
                 "Thanks for your time, goodbye!")
UNAVAILABLE = ("There is no number to reach the homeowner right now. Tell the business the homeowner will call "
               "them back, then say your closing line and call end_call.")
CONNECTED_STATUSES = frozenset({"completed", "answered"})


def whisper_line(ctx: CallContext) -> str:
    """What the homeowner hears before being bridged: who is on the line and why, in one line."""
    return (f"Hello, this is your AI assistant. {ctx.service_provider} is on the line about your "
            f"{ctx.problem or 'repair'} request and wants to speak with you. Connecting you now.")


def outcome_of(dial_status: str) -> str:
    return "connected" if dial_status in CONNECTED_STATUSES else "not_reached"


class HomeownerTransfers:
    def __init__(self, js: JetStreamContext, settings: GatewaySettings, *, timeout_s: float = 10.0) -> None:
        self.js = js
        self.settings = settings
        self._client = Client(settings.twilio_account_sid, settings.twilio_auth_token,
                              http_client=TwilioHttpClient(timeout=timeout_s))
        self._client.api.base_url = settings.twilio_api_base_url.rstrip("/")
        self._timeout_s = timeout_s

    async def homeowner_phone(self, job_id: str) -> str | None:
        """The job's homeowner number: the latest JobStarted that carries one (a restart keeps it)."""
        phone = None
        async for stored in bus.replay(self.js, f"{subjects.PREFIX}.job.{job_id}.started"):
            if isinstance(stored.event, ev.JobStarted) and stored.event.homeowner_phone:
                phone = stored.event.homeowner_phone
        return phone

    def dial_twiml(self, ctx: CallContext, phone: str) -> str:
        query = urlencode({"call_id": ctx.call_id})
        response = VoiceResponse()
        dial = Dial(action=self.settings.public_url(ACTION_PATH, query), method="POST",
                    timeout=int(self.settings.transfer_ring_s))
        dial.number(phone, url=self.settings.public_url(WHISPER_PATH, query), method="POST")
        response.append(dial)
        return str(response.to_xml(xml_declaration=True))

    def _update(self, call_sid: str, twiml: str) -> None:
        self._client.calls(call_sid).update(twiml=twiml)

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Replace the live call's TwiML (its media stream ends and the new document runs)."""
        await asyncio.wait_for(asyncio.to_thread(self._update, call_sid, twiml), self._timeout_s + 1.0)
