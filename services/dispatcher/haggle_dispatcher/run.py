"""The dispatcher service shell: four durable consumers and a periodic reconciliation with Twilio."""

from __future__ import annotations

import asyncio
import logging

from haggle.runtime import Runtime, ServiceHandle
from haggle.settings_table import pick

from . import call_cost
from .service import Dispatcher, DispatcherSettings
from .twilio_dialer import TwilioDialer

log = logging.getLogger(__name__)


def dispatcher_settings(rt: Runtime) -> DispatcherSettings:
    s = rt.settings
    s.require_twilio()
    return pick(s, DispatcherSettings, market=s.market_policy())


# A call younger than this is still being connected; asking Twilio about it would only cost a request.
RECONCILE_MIN_AGE_S = 10.0


async def start(rt: Runtime, *, price_reads: int = 6, price_reread_s: float = 10.0) -> ServiceHandle:
    """`price_reads`, `price_reread_s`: how often and how far apart the call-cost consumer asks Twilio for a
    call's price while it is still null (docs/call-cost.md)."""
    settings = dispatcher_settings(rt)
    s = rt.settings
    assert s.twilio_account_sid and s.twilio_auth_token
    dialer = TwilioDialer(s.twilio_account_sid, s.twilio_auth_token, api_base_url=s.twilio_api_base_url,
                          timeout_s=s.twilio_http_timeout_s)
    dispatcher = await Dispatcher.create(rt.js, rt.publisher, dialer, settings)
    handle = ServiceHandle("dispatcher")
    handle.dispatcher = dispatcher  # type: ignore[attr-defined]
    handle.consume(rt, "dispatcher-jobs", dispatcher.on_job)
    handle.consume(rt, "dispatcher-bookings", dispatcher.on_booking)
    handle.consume(rt, "dispatcher-dials", dispatcher.on_dial, concurrency=max(4, settings.max_concurrent_calls * 2))
    handle.consume(rt, "dispatcher-outcomes", dispatcher.on_outcome)
    call_cost.attach(handle, rt, price_reads=price_reads, reread_s=price_reread_s)

    async def reconcile_loop() -> None:
        # At start: calls that were live while no dispatcher ran. Then periodically: a status callback that was in
        # flight on a gateway that died is lost (Twilio does not retry it by default), and only this notices.
        first = True
        while not dispatcher.stopping.is_set():
            try:
                fixed = await dispatcher.reconcile(older_than_s=0 if first else RECONCILE_MIN_AGE_S)
                if fixed:
                    log.info("reconciled %d call(s) from Twilio's call status", fixed)
            except Exception:
                log.exception("reconciliation failed")
            first = False
            try:
                await asyncio.wait_for(dispatcher.stopping.wait(), s.reconcile_s)
            except TimeoutError:
                pass

    async def stop(deadline_s: float) -> None:
        dispatcher.stopping.set()

    handle.background(reconcile_loop(), "reconcile")
    handle.on_stop.append(stop)
    return handle
