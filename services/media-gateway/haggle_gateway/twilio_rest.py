"""Hanging up a live call through the Twilio REST API (the official SDK, pointed at a configurable base URL).

`client.calls(sid).update(status="completed")` is a blocking HTTP call, so it runs in a worker thread to
keep the audio path free, with the SDK's own request timeout so a hung connection cannot hold the thread.
A call that already ended is success for us: Twilio answers 404 / error 20404 for one it no longer knows and
400 / error 21220 ("invalid call state") for one that is no longer in progress (docs/twilio-rest.md).
`TWILIO_API_BASE_URL` lets tests and the Twilio stand-in receive the request on loopback.
"""

from __future__ import annotations

import asyncio
import logging

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from haggle.settings_table import DEFAULTS

from .settings import GatewaySettings

log = logging.getLogger(__name__)

NOT_FOUND_CODE = 20404
NOT_IN_PROGRESS_CODE = 21220


class HangupError(RuntimeError):
    """Twilio refused the hang-up for a reason other than "already ended"."""


class TwilioHangup:
    """An async callable: `await hangup(call_sid)` ends the call (idempotent)."""

    def __init__(self, settings: GatewaySettings, *, timeout_s: float = DEFAULTS["twilio_http_timeout_s"]) -> None:
        if not settings.twilio_account_sid or not settings.twilio_auth_token:
            raise ValueError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are required to hang up calls")
        self._client = Client(settings.twilio_account_sid, settings.twilio_auth_token,
                              http_client=TwilioHttpClient(timeout=timeout_s))
        self._client.api.base_url = settings.twilio_api_base_url.rstrip("/")
        self._timeout_s = timeout_s

    def _update(self, call_sid: str) -> None:
        try:
            self._client.calls(call_sid).update(status="completed")
        except TwilioRestException as exc:
            if exc.status == 404 or exc.code in (NOT_FOUND_CODE, NOT_IN_PROGRESS_CODE):
                log.info("call %s had already ended", call_sid)
                return
            raise HangupError(f"Twilio refused to hang up {call_sid}: HTTP {exc.status} code {exc.code}") from exc

    async def __call__(self, call_sid: str) -> None:
        # The SDK timeout bounds each socket read; this bounds the whole request (connect, send, read) too.
        await asyncio.wait_for(asyncio.to_thread(self._update, call_sid), self._timeout_s + 1.0)
