"""Placing and inspecting outbound calls with the official `twilio` SDK.

The SDK is synchronous (requests), so calls run in a worker thread. `TWILIO_API_BASE_URL` replaces the
SDK's `api.twilio.com` domain, which is how tests and the demo point the real client at the local
stand-in without changing any code path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client


@dataclass(frozen=True)
class DialRequest:
    call_id: str
    to: str
    from_: str
    public_base_url: str
    ring_timeout_s: int
    time_limit_s: int


@dataclass(frozen=True)
class DialError(Exception):
    reason: str
    code: int | None
    http_status: int | None


class TwilioDialer:
    def __init__(self, account_sid: str, auth_token: str, *, api_base_url: str = "https://api.twilio.com") -> None:
        self.client = Client(account_sid, auth_token)
        self.client.api.base_url = api_base_url.rstrip("/")

    @staticmethod
    def webhook(base: str, path: str, call_id: str) -> str:
        return f"{base.rstrip('/')}{path}?{urlencode({'call_id': call_id})}"

    def _create(self, req: DialRequest) -> str:
        call = self.client.calls.create(
            to=req.to,
            from_=req.from_,
            url=self.webhook(req.public_base_url, "/twiml", req.call_id),
            method="POST",
            status_callback=self.webhook(req.public_base_url, "/twilio/status", req.call_id),
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            status_callback_method="POST",
            machine_detection="Enable",
            async_amd="true",
            async_amd_status_callback=self.webhook(req.public_base_url, "/twilio/amd", req.call_id),
            async_amd_status_callback_method="POST",
            timeout=req.ring_timeout_s,
            time_limit=req.time_limit_s,
        )
        return str(call.sid)

    async def dial(self, req: DialRequest) -> str:
        """Returns the call SID; raises DialError with Twilio's code and HTTP status."""
        try:
            return await asyncio.to_thread(self._create, req)
        except TwilioRestException as exc:
            raise DialError(str(exc.msg), exc.code, exc.status) from exc
        except TwilioException as exc:
            raise DialError(str(exc), None, None) from exc
        except OSError as exc:  # connection refused, DNS, TLS: transient
            raise DialError(f"cannot reach Twilio: {exc}", None, None) from exc

    def _find(self, to: str, after: datetime) -> list[tuple[str, str]]:
        calls = self.client.calls.list(to=to, start_time_after=after, limit=20)
        return [(str(c.sid), str(c.status)) for c in calls]

    async def find_calls(self, to: str, after: datetime) -> list[tuple[str, str]]:
        """Calls to `to` created after `after`: (sid, status). Used to reconcile a dial a crash interrupted."""
        return await asyncio.to_thread(self._find, to, after)

    def _status(self, sid: str) -> tuple[str, float | None]:
        call = self.client.calls(sid).fetch()
        duration = float(call.duration) if call.duration not in (None, "") else None
        return str(call.status), duration

    async def fetch_status(self, sid: str) -> tuple[str, float | None]:
        return await asyncio.to_thread(self._status, sid)
