"""Prometheus metrics shared by the services, served at `/metrics` by whichever process runs them."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

LIVE_CALLS = Gauge("haggle_live_calls", "Media streams bridged right now in this process")
DIALS = Counter("haggle_dials_total", "Dial attempts placed with Twilio", ["result"])
OUTCOMES = Counter("haggle_call_outcomes_total", "Call outcomes extracted", ["outcome"])
REALTIME_ERRORS = Counter("haggle_realtime_errors_total", "Errors from the realtime voice session", ["kind"])
AUDIO_FRAMES = Counter("haggle_audio_frames_total", "Audio frames forwarded by the gateway", ["direction"])
STREAMS_REJECTED = Counter("haggle_streams_rejected_total", "Media streams closed before a session", ["reason"])
EVENTS_HANDLED = Counter("haggle_events_handled_total", "Events handled per consumer", ["consumer"])
CONSUMER_LAG = Gauge("haggle_consumer_pending", "Messages not yet delivered per consumer", ["consumer"])
ANSWER_TO_FIRST_AUDIO = Histogram(
    "haggle_answer_to_first_audio_seconds", "From the stream start to the agent's first audio sent to Twilio",
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8),
)
TURN_LATENCY = Histogram(
    "haggle_turn_latency_seconds", "From the provider's end of speech to the agent's first audio frame sent",
    buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5),
)


def metrics_router() -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
