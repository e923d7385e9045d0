"""Hanging up a live call through the Twilio REST API (the official SDK, pointed at a configurable base URL).

`client.calls(sid).update(status="completed")` is a blocking HTTP call, so it runs in a worker thread to
keep the audio path free. A call that already ended answers 404 / error 20404: that is success for us
(pipecat's serializer treats it the same way). `TWILIO_API_BASE_URL` lets tests and the Twilio stand-in
receive the request on loopback.
"""

from __future__ import annotations

import asyncio
import logging

from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from .settings import GatewaySettings

log = logging.getLogger(__name__)

ALREADY_ENDED_CODE = 20404


class HangupError(RuntimeError):
    """Twilio refused the hang-up for a reason other than "already ended"."""


class TwilioHangup:
    """An async callable: `await hangup(call_sid)` ends the call (idempotent)."""

    def __init__(self, settings: GatewaySettings, *, timeout_s: float = 10.0) -> None:
        if not settings.twilio_account_sid or not settings.twilio_auth_token:
            raise ValueError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are required to hang up calls")
        self._client = Client(settings.twilio_account_sid, settings.twilio_auth_token)
        self._client.api.base_url = settings.twilio_api_base_url.rstrip("/")
        self._timeout_s = timeout_s

    def _update(self, call_sid: str) -> None:
        try:
            self._client.calls(call_sid).update(status="completed")
        except TwilioRestException as exc:
            if exc.status == 404 or exc.code == ALREADY_ENDED_CODE:
                log.info("call %s had already ended", call_sid)
                return
            raise HangupError(f"Twilio refused to hang up {call_sid}: HTTP {exc.status} code {exc.code}") from exc

    async def __call__(self, call_sid: str) -> None:
        await asyncio.wait_for(asyncio.to_thread(self._update, call_sid), self._timeout_s)
