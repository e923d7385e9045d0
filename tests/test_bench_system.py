"""The whole-system benchmark step's plumbing: `haggle up` in a child process takes two calls from the load
generator, frames arrive both ways, and the step's record carries what the report reads. No latency or CPU
figure is asserted (those are measurements, for `make bench`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `benchmarks` is a folder of the repository, not an installed package (make bench runs it from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report
from benchmarks.gateway_bench import Bench, Step

pytestmark = pytest.mark.timeout(120)


@pytest.mark.slow
async def test_system_step_streams_both_ways_and_reports(tmp_path: Path) -> None:
    async with Bench(tmp_path, pin=False, quiet_wait_s=0.0) as bench:
        system = await bench.run(Step(target="system", calls=2, duration_s=1.5, warmup_s=0.5, loop="asyncio"))
        relay = await bench.run(Step(target="relay", calls=2, duration_s=1.5, warmup_s=0.5, loop="asyncio"))
    for step in (system, relay):
        assert step["errors"] == [], step.get("log_tail")
        assert step["connected"] == step["streaming"] == 2
        # 2 calls x 50 frames/s x 1.5 s each way, give or take a frame at each edge of the window
        assert step["in_frames"] >= 100 and step["out_frames"] >= 100
        assert step["in_frames"] - step["in_lost"] > 0 and step["out_frames"] - step["out_lost"] > 0
        assert step["in_p99_ms"] is not None and step["out_p99_ms"] is not None
        assert step["cpu_s_per_call_min"] > 0 and step["rss_mb"] > 0
    assert system["processes"] == 2 and relay["processes"] == 1  # haggle up and its nats-server, measured as one
    assert system["child"].get("exit") == 0, system.get("log_tail")  # haggle up stopped cleanly on SIGTERM
    assert len(system["child"]["gc"]["count"]) == 3  # its GC pause counters came back
    results = {"config": {"duration": 1.5, "pin": False}, "machine": {"cpus": 2}, "started_at": "now",
               "system": [{"round": 0, "system": system, "relay": relay}]}
    table = report.system_markdown(results)
    assert "| 2 | 1 | haggle up |" in table and "| 2 | 1 | relay |" in table
    assert "Ratios haggle up / relay" in table and "| 2 | 1 | " in table.split("Ratios")[1]
