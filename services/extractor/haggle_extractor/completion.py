"""Job completion: publishes a job's JobCompleted once nothing more can happen to its offers.

After any event that can settle a provider, the job's log is folded and `decisions.completion` decides: every
provider settled and, in the `market` strategy, no further round that could improve the best all-in price
(`market.job_complete`). The dispatcher plans those rounds from the same fold with the same policy, so the two
never disagree about whether a callback is still due. The results webhook (`webhook.py`) sends the report on.
"""

from __future__ import annotations

import logging

from haggle_contracts import decisions
from haggle_contracts import events as ev
from haggle_contracts.market import MarketPolicy
from nats.js import JetStreamContext

from haggle import bus
from haggle.bus import Publisher
from haggle.consumer import Delivery

log = logging.getLogger(__name__)


class JobCompletion:
    def __init__(self, js: JetStreamContext, publisher: Publisher, policy: MarketPolicy) -> None:
        self.js = js
        self.publisher = publisher
        self.policy = policy

    async def on_job_progress(self, event: ev.Event, delivery: Delivery) -> None:
        if isinstance(event, ev.CallStatusChanged) and event.status not in ev.TERMINAL_TWILIO_STATUSES:
            return
        completed = decisions.completion(await bus.job_history(self.js, event.job_id), self.policy)
        if completed is not None:
            await self.publisher.publish(completed)
            log.info("job %s completed: best %s at %s", event.job_id, completed.best_provider_id,
                     completed.best_price)
