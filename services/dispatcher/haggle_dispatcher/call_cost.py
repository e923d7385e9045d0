"""Prices each call once its status is final: Twilio's charge for the call plus the realtime model's minutes.

Twilio fills in a call's `price` (and `price_unit`) on the Call resource only some time after the call has
ended, so right after the final status it is often still null (docs/call-cost.md). The pricer reads the
Call resource with the official SDK; while the price is null it hands the status event back to JetStream
(`Later`) and reads again, up to `price_reads` times, then publishes the cost without Twilio's part
(`twilio_price_missing` says so) rather than never. Realtime minutes are the call's answered duration (the
model is connected for as long as the callee is on the line) at `REALTIME_PRICE_PER_MINUTE`.

Each call is priced once: the event id is derived from the call sid (a repeated final callback, or a
reconciliation that also reports the end, is refused by the stream's duplicate window), and the fold keeps
one cost per call sid whatever arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import requests
from haggle_contracts import events as ev
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from haggle.consumer import Delivery, Later
from haggle.runtime import Runtime, ServiceHandle
from haggle.settings_table import DEFAULTS

log = logging.getLogger(__name__)

CONSUMER = "call-cost"


@dataclass(frozen=True)
class CallCharge:
    """What the Call resource says about the money: `price` None while Twilio has not computed it."""

    status: str
    price: Decimal | None
    price_unit: str | None
    duration_s: float | None


class CallReader(Protocol):
    async def charge(self, call_sid: str) -> CallCharge: ...


def parse_price(raw: object) -> Decimal | None:
    """Twilio sends the price as a decimal string, shown as a debit (negative) in its examples: the charge is
    its absolute value. Anything unreadable counts as not reported yet."""
    if raw in (None, ""):
        return None
    try:
        return abs(Decimal(str(raw)))
    except InvalidOperation:
        return None


class TwilioCallReader:
    """Reads Call resources with the official SDK (`TWILIO_API_BASE_URL` points it at the stand-in in tests)."""

    def __init__(self, account_sid: str, auth_token: str, *, api_base_url: str = DEFAULTS["twilio_api_base_url"],
                 timeout_s: float = DEFAULTS["twilio_http_timeout_s"]) -> None:
        self.client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout_s))
        self.client.api.base_url = api_base_url.rstrip("/")

    def _fetch(self, call_sid: str) -> CallCharge:
        call = self.client.calls(call_sid).fetch()
        duration = float(call.duration) if call.duration not in (None, "") else None
        return CallCharge(str(call.status), parse_price(call.price), call.price_unit, duration)

    async def charge(self, call_sid: str) -> CallCharge:
        return await asyncio.to_thread(self._fetch, call_sid)


def priced_event(status: ev.CallStatusChanged, charge: CallCharge | None, *, realtime_price_per_minute: float,
                 missing: str | None = None) -> ev.CallPriced:
    """The cost of one call. Amounts are rounded to 1/10000 of the currency unit (Twilio quotes five decimals)."""
    duration = (charge.duration_s if charge and charge.duration_s is not None else status.duration_s) or 0.0
    minutes = duration / 60.0
    realtime = round(minutes * realtime_price_per_minute, 4)
    twilio = float(round(charge.price, 5)) if charge and charge.price is not None else None
    return ev.CallPriced(
        event_id=f"priced-{status.call_sid}",
        job_id=status.job_id,
        provider_id=status.provider_id,
        attempt=status.attempt,
        call_sid=status.call_sid,
        currency=(charge.price_unit if charge and charge.price_unit else "USD").upper(),
        twilio_price=twilio,
        twilio_price_missing=None if twilio is not None else (missing or "not reported by Twilio"),
        billed_duration_s=duration,
        realtime_minutes=round(minutes, 4),
        realtime_price_per_minute=realtime_price_per_minute,
        realtime_cost=realtime,
        total=round((twilio or 0.0) + realtime, 4),
    )


class CallPricer:
    """The `call-cost` consumer's handler: one `CallPriced` per call, after its final status."""

    def __init__(self, publish: Callable[[ev.Event], Awaitable[Any]], reader: CallReader, *,
                 realtime_price_per_minute: float, price_reads: int = 6, reread_s: float = 10.0) -> None:
        self.publish = publish
        self.reader = reader
        self.realtime_price_per_minute = realtime_price_per_minute
        self.price_reads = max(1, price_reads)
        self.reread_s = reread_s

    async def on_status(self, event: ev.Event, delivery: Delivery) -> Later | None:
        if not isinstance(event, ev.CallStatusChanged) or event.status not in ev.TERMINAL_TWILIO_STATUSES:
            return None
        last_read = delivery.num_delivered >= self.price_reads
        try:
            charge = await self.reader.charge(event.call_sid)
        except (TwilioException, requests.RequestException, OSError) as exc:
            if not last_read:
                log.info("call %s: cannot read its price yet (%s); again in %.0fs", event.call_sid, exc,
                         self.reread_s)
                return Later(self.reread_s)
            await self._publish(priced_event(event, None, realtime_price_per_minute=self.realtime_price_per_minute,
                                             missing=f"Twilio could not be read: {exc}"[:200]))
            return None
        if charge.price is None and not last_read:
            return Later(self.reread_s)  # Twilio has not computed the price yet
        missing = None if charge.price is not None else f"still null after {delivery.num_delivered} reads"
        await self._publish(priced_event(event, charge, realtime_price_per_minute=self.realtime_price_per_minute,
                                         missing=missing))
        return None

    async def _publish(self, event: ev.CallPriced) -> None:
        await self.publish(event)
        log.info("call %s priced: %s %.4f (Twilio %s, realtime %.4f)", event.call_sid, event.currency, event.total,
                 event.twilio_price, event.realtime_cost)


def attach(handle: ServiceHandle, rt: Runtime, *, price_reads: int = 6, reread_s: float = 10.0,
           reader: CallReader | None = None) -> CallPricer:
    """Run the pricer as part of a service (the dispatcher): its own durable consumer on call statuses."""
    s = rt.settings
    if reader is None:
        assert s.twilio_account_sid and s.twilio_auth_token
        reader = TwilioCallReader(s.twilio_account_sid, s.twilio_auth_token, api_base_url=s.twilio_api_base_url,
                                  timeout_s=s.twilio_http_timeout_s)
    pricer = CallPricer(rt.publisher.publish, reader, realtime_price_per_minute=s.realtime_price_per_minute,
                        price_reads=price_reads, reread_s=reread_s)
    handle.consume(rt, CONSUMER, pricer.on_status, concurrency=4)
    return pricer
