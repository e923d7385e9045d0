"""The media gateway's Prometheus metrics, read the way Prometheus reads them: an HTTP GET of `/metrics` on the
running system, before, during and after a simulated call (with one realtime drop) and a refused stream.

Metrics are process-wide, and other tests in this process move them too, so every check is on a difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx
import pytest
import websockets
from haggle_contracts import events as ev
from prometheus_client.parser import text_string_to_metric_families
from test_gateway_faults import joe, start_job, world
from waits import settled

Sample = tuple[str, frozenset[tuple[str, str]]]


async def scrape(base_url: str) -> dict[Sample, float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=5, trust_env=False) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def refused_stream(base_url: str) -> int | None:
    """A stream whose `start` names no stored call: closed with 1008 before any realtime session."""
    start = {"event": "start", "sequenceNumber": "1", "streamSid": "MZ" + "0" * 32,
             "start": {"streamSid": "MZ" + "0" * 32, "callSid": "CA" + "0" * 32, "accountSid": "AC" + "0" * 32,
                       "customParameters": {"call_id": "c_nobody", "token": "not-a-token"}}}
    url = base_url.replace("http://", "ws://") + "/media-stream"
    async with websockets.connect(url, proxy=None, open_timeout=5) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps(start))
            await asyncio.wait_for(ws.recv(), 10)
        return ws.close_code


@pytest.mark.slow
async def test_gateway_metrics_after_a_simulated_call(nc, nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    persona = joe()
    async with world(nc, nats_server.url, tmp_path, [persona], "m1",
                     realtime={"drop_after_responses": 2, "drop_sessions": 1}) as w:
        before = await scrape(w.api)
        await start_job(w.api, "m1", [persona])
        await w.wait_for(lambda e: isinstance(e, ev.UtteranceTranscribed), 20)
        during = await scrape(w.api)
        ended = await w.wait_for(lambda e: isinstance(e, ev.CallEnded), 40)
        await settled(w.api, "m1")
        assert await refused_stream(w.api) == 1008
        after = await scrape(w.api)

    assert isinstance(ended, ev.CallEnded) and ended.reason == "end_call"

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    live = "haggle_live_calls"
    assert value(during, live) == value(before, live) + 1 and value(after, live) == value(before, live)
    # 20 ms frames in for the whole call; coalesced chunks out for every agent line.
    assert delta("haggle_audio_frames_total", direction="in") >= ended.duration_s * 40
    assert delta("haggle_audio_frames_total", direction="out") >= 4 * 5
    assert delta("haggle_realtime_errors_total", kind="session_lost") == 1
    assert delta("haggle_streams_rejected_total", reason="unknown_call") == 1
    # Stream start -> first agent audio: once for the call, and plausibly short (the hello, then the greeting).
    assert delta("haggle_answer_to_first_audio_seconds_count") == 1
    first_audio = delta("haggle_answer_to_first_audio_seconds_sum")
    assert 0.2 < first_audio < 5.0, first_audio
    # End of the provider's speech -> the agent's next audio: once per provider line. How long is a figure for
    # the benchmarks (under a second on an idle loopback); here only that it was measured.
    turns = delta("haggle_turn_latency_seconds_count")
    assert turns == sum(t.speaker == "provider" for t in persona.turns), turns
    assert delta("haggle_turn_latency_seconds_sum") > 0
    assert delta("haggle_turn_latency_seconds_bucket", le="+Inf") == turns
