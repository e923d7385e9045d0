"""The extractor service shell: price extraction, job completion and the results webhook, each its own consumer."""

from __future__ import annotations

from haggle.runtime import Runtime, ServiceHandle
from haggle.settings_table import pick

from .completion import JobCompletion
from .service import Extractor, ExtractorSettings
from .webhook import ReportSender


async def start(rt: Runtime, *, gateway_grace_s: float = 5.0) -> ServiceHandle:
    s = rt.settings
    extractor = Extractor(rt.js, rt.publisher, pick(s, ExtractorSettings, gateway_grace_s=gateway_grace_s))
    handle = ServiceHandle("extractor")
    handle.consume(rt, "extractor", extractor.on_call_event, concurrency=4)
    handle.consume(rt, "job-completion", JobCompletion(rt.js, rt.publisher, s.market_policy()).on_job_progress)
    if s.results_webhook_url:
        sender = ReportSender(rt.js, s.results_webhook_url, s.results_webhook_secret)
        handle.consume(rt, "reporter", sender.on_completed)
    return handle
