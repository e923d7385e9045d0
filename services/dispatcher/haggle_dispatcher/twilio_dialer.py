"""Placing and inspecting outbound calls with the official `twilio` SDK.

The SDK is synchronous (requests), so calls run in a worker thread. `TWILIO_API_BASE_URL` replaces the
SDK's `api.twilio.com` domain, which is how tests and the demo point the real client at the local
stand-in without changing any code path.

Every request carries a timeout (the SDK's own `TwilioHttpClient(timeout=...)`): without one a hung
connection would hold a call slot forever. Twilio facts this module relies on (error JSON, 429 and
`Retry-After`, the list filters, AMD parameters) are in docs/twilio-rest.md.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from haggle.settings_table import DEFAULTS

DEFAULT_TIMEOUT_S: float = DEFAULTS["twilio_http_timeout_s"]

# Answering-machine detection (docs/twilio-rest.md, "AMD"). DetectMessageEnd waits for a machine's greeting
# to end, so a real voicemail reports `machine_end_beep` (or `_silence` / `_other`) just before the tone.
# The speech threshold is Twilio's maximum: the default 2400 ms calls a receptionist's one-sentence
# greeting a machine. The gateway treats any verdict as evidence, never as a reason to hang up alone.
AMD_PARAMS: dict[str, Any] = {
    "machine_detection": "DetectMessageEnd",
    "machine_detection_speech_threshold": 6000,  # ms of continuous speech before "machine" (1000-6000)
    "machine_detection_speech_end_threshold": 1200,  # ms of silence that ends a greeting (Twilio's default)
    "machine_detection_silence_timeout": 5000,  # ms of initial silence before `unknown` (default)
    "machine_detection_timeout": 45,  # s: long voicemail greetings must end before Twilio gives up
}


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
    """A create that did not return a call. `ambiguous`: Twilio may have created the call anyway."""

    reason: str
    code: int | None
    http_status: int | None
    retry_after_s: float | None = None
    ambiguous: bool = False


class _HttpClient(TwilioHttpClient):
    """The SDK's client, remembering the last response per thread so a 429's `Retry-After` can be read.

    The SDK's exception carries status, code and message but not headers; worker threads share one client.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        self._local.response = None
        response = super().request(*args, **kwargs)
        self._local.response = response
        return response

    def last_headers(self) -> dict[str, str]:
        response = getattr(self._local, "response", None)
        return dict(response.headers or {}) if response is not None else {}


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` is either delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or datetime.now(when.tzinfo)
    return max(0.0, (when - now).total_seconds())


def classify(exc: BaseException, headers: dict[str, str]) -> DialError:
    """Turn what the SDK raised into a DialError that says whether the call may exist at Twilio."""
    if isinstance(exc, TwilioRestException):
        retry_after = retry_after_seconds(headers.get("Retry-After") or headers.get("retry-after"))
        # 429 is documented as never processed; a 5xx (often a proxy's 502/504) may have been.
        return DialError(str(exc.msg), exc.code, exc.status, retry_after_s=retry_after,
                         ambiguous=exc.status >= 500)
    if isinstance(exc, requests.ConnectTimeout):
        return DialError(f"cannot reach Twilio: {exc}", None, None)  # no connection, so nothing was sent
    if isinstance(exc, requests.RequestException | OSError):
        # A read timeout or a connection lost mid-request: the create may have reached Twilio.
        return DialError(f"no answer from Twilio: {exc}", None, None, ambiguous=True)
    return DialError(str(exc), None, None, ambiguous=True)


class TwilioDialer:
    def __init__(self, account_sid: str, auth_token: str, *, api_base_url: str = DEFAULTS["twilio_api_base_url"],
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.http = _HttpClient(timeout_s)
        self.client = Client(account_sid, auth_token, http_client=self.http)
        self.client.api.base_url = api_base_url.rstrip("/")
        self.timeout_s = timeout_s

    @staticmethod
    def webhook(base: str, path: str, call_id: str) -> str:
        return f"{base.rstrip('/')}{path}?{urlencode({'call_id': call_id})}"

    def _create(self, req: DialRequest) -> str:
        try:
            call = self.client.calls.create(
                to=req.to,
                from_=req.from_,
                url=self.webhook(req.public_base_url, "/twiml", req.call_id),
                method="POST",
                status_callback=self.webhook(req.public_base_url, "/twilio/status", req.call_id),
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                status_callback_method="POST",
                async_amd="true",
                async_amd_status_callback=self.webhook(req.public_base_url, "/twilio/amd", req.call_id),
                async_amd_status_callback_method="POST",
                timeout=req.ring_timeout_s,
                time_limit=req.time_limit_s,
                **AMD_PARAMS,
            )
        except (TwilioException, requests.RequestException, OSError) as exc:
            raise classify(exc, self.http.last_headers()) from exc
        return str(call.sid)

    async def dial(self, req: DialRequest) -> str:
        """Returns the call SID; raises DialError with Twilio's code, HTTP status and Retry-After."""
        return await asyncio.to_thread(self._create, req)

    def _find(self, to: str, from_: str, after: datetime) -> list[tuple[str, str]]:
        # Twilio filters StartTime by date only, and a queued call has no start time yet: filter by the
        # numbers there and by creation time here (newest first, so one page holds any recent dial).
        calls = self.client.calls.list(to=to, from_=from_, limit=50)
        return [(str(c.sid), str(c.status)) for c in calls
                if c.date_created is None or c.date_created >= after]

    async def find_calls(self, to: str, from_: str, after: datetime) -> list[tuple[str, str]]:
        """Calls from `from_` to `to` created at or after `after`: (sid, status), newest first.

        Used before dialling again after an ambiguous error, so a call Twilio did create is adopted.
        """
        return await asyncio.to_thread(self._find, to, from_, after)

    def _status(self, sid: str) -> tuple[str, float | None]:
        call = self.client.calls(sid).fetch()
        duration = float(call.duration) if call.duration not in (None, "") else None
        return str(call.status), duration

    async def fetch_status(self, sid: str) -> tuple[str, float | None]:
        return await asyncio.to_thread(self._status, sid)
