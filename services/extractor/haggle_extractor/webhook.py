"""Delivers each job's report to RESULTS_WEBHOOK_URL, signed, retried with backoff, once per job.

The body is the JobCompleted event as JSON. `X-Haggle-Signature: sha256=<hex>` is an HMAC-SHA256 of
the body with RESULTS_WEBHOOK_SECRET; `X-Haggle-Delivery` is stable per job so a receiver can drop
the (rare) repeat that a crash between a successful POST and recording it could cause.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import httpx
from haggle_contracts import codec, subjects
from haggle_contracts import events as ev
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from haggle.consumer import Delivery, Later, backoff

log = logging.getLogger(__name__)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class ReportSender:
    def __init__(self, js: JetStreamContext, url: str, secret: str | None, *, timeout_s: float = 10.0) -> None:
        self.js = js
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self._kv = None

    async def _guard(self):  # type: ignore[no-untyped-def]
        if self._kv is None:
            self._kv = await self.js.key_value(subjects.KV_REPORTS)
        return self._kv

    async def on_completed(self, event: ev.Event, delivery: Delivery) -> Later | None:
        if not isinstance(event, ev.JobCompleted):
            return None
        kv = await self._guard()
        key = f"sent.{event.job_id}"
        try:
            await kv.get(key)
            return None  # already delivered
        except KeyNotFoundError:
            pass
        body = codec.encode(event)
        headers = {"Content-Type": "application/json", "X-Haggle-Delivery": event.event_id,
                   "X-Haggle-Event": "JobCompleted"}
        if self.secret:
            headers["X-Haggle-Signature"] = sign(body, self.secret)
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            wait = backoff(delivery.num_delivered)
            log.warning("results webhook for %s failed (%s); retrying in %.1fs", event.job_id, exc, wait)
            return Later(wait)
        if response.status_code >= 300:
            wait = backoff(delivery.num_delivered)
            log.warning("results webhook for %s answered %s; retrying in %.1fs", event.job_id,
                        response.status_code, wait)
            return Later(wait)
        try:
            await kv.create(key, b"1")
        except KeyWrongLastSequenceError:
            pass
        log.info("results webhook received the report of job %s", event.job_id)
        return None
