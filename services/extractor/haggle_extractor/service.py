"""The extractor's event handler: every ended call gets a PriceExtracted (job completion is `completion.py`).

The transcript is rebuilt from the call's UtteranceTranscribed events on the log, not taken from
CallEnded, so a call whose gateway died still gets its result: the Twilio status callback
("completed") triggers extraction after a grace period in which the gateway's CallEnded would
normally have arrived.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from haggle_contracts import events as ev
from haggle_contracts import subjects
from nats.js import JetStreamContext

from haggle import bus
from haggle.bus import Publisher
from haggle.consumer import Delivery, Later
from haggle.metrics import OUTCOMES
from haggle.settings_table import DEFAULTS

from .extract import price_extracted, read_call

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractorSettings:
    xai_api_key: str | None = None
    xai_api_base_url: str = DEFAULTS["xai_api_base_url"]
    xai_model: str = DEFAULTS["xai_model"]
    gateway_grace_s: float = 5.0  # how long a "completed" status waits for the gateway's CallEnded
    xai_timeout_s: float = 20.0
    xai_retries: int = 2


SCOPE_FIELDS = ("visit_fee", "includes_parts", "warranty", "earliest_availability")


def said_scope(quotes: list[ev.QuoteRecorded]) -> dict[str, object]:
    """What the price covers, as the call's record_quote calls said it (the latest mention of each field wins)."""
    scope: dict[str, object] = {}
    for quote in quotes:
        for name in SCOPE_FIELDS:
            value = getattr(quote, name)
            if value is not None:
                scope[name] = value
    return scope


def provider_filter(job_id: str, provider_id: str) -> str:
    return f"{subjects.PREFIX}.job.{job_id}.provider.{provider_id}.>"


class Extractor:
    def __init__(self, js: JetStreamContext, publisher: Publisher, settings: ExtractorSettings) -> None:
        self.js = js
        self.publisher = publisher
        self.settings = settings

    async def on_call_event(self, event: ev.Event, delivery: Delivery) -> Later | None:
        if isinstance(event, ev.CallEnded):
            await self.extract_call(event.job_id, event.provider_id, event.attempt, event.call_sid, event.reason)
        elif isinstance(event, ev.CallStatusChanged) and event.status == "completed":
            if delivery.num_delivered == 1 and self.settings.gateway_grace_s > 0:
                return Later(self.settings.gateway_grace_s)
            await self.extract_call(event.job_id, event.provider_id, event.attempt, event.call_sid, None)
        return None

    async def _history(self, job_id: str, provider_id: str) -> list[ev.Event]:
        return [s.event async for s in bus.replay(self.js, provider_filter(job_id, provider_id)) if s.event]

    async def extract_call(
        self, job_id: str, provider_id: str, attempt: int, call_sid: str, reason: str | None
    ) -> ev.PriceExtracted | None:
        history = await self._history(job_id, provider_id)
        mine = [e for e in history if isinstance(e, ev.CallEvent) and e.call_sid == call_sid]
        if any(isinstance(e, ev.PriceExtracted) for e in mine):
            return None  # done already (CallEnded and the status callback both lead here)
        if reason is None:
            ended = next((e for e in mine if isinstance(e, ev.CallEnded)), None)
            reason = ended.reason if ended else "gateway_lost"
        x = await read_call(
            mine, reason, api_key=self.settings.xai_api_key, base_url=self.settings.xai_api_base_url,
            model=self.settings.xai_model, timeout_s=self.settings.xai_timeout_s, retries=self.settings.xai_retries,
        )
        result = price_extracted(
            x, job_id=job_id, provider_id=provider_id, attempt=attempt, call_sid=call_sid,
            scope=said_scope([q for q in mine if isinstance(q, ev.QuoteRecorded)]),
        )
        await self.publisher.publish(result)
        OUTCOMES.labels(result.outcome.value).inc()
        log.info("call %s of provider %s: %s %s (%s)", call_sid, provider_id, result.outcome.value,
                 result.price, result.method)
        return result
