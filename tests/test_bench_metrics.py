"""haggle.metrics.LoopCounter, the per-frame counter: same exposition as a Prometheus counter, bad labels refused."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from haggle.metrics import LoopCounter


def test_exposed_as_a_counter_per_label_set() -> None:
    registry = CollectorRegistry()
    frames = LoopCounter("t_frames_total", "Frames", ("direction",), registry=registry)
    inbound = frames.labels(direction="in")
    for _ in range(3):
        inbound.inc()
    frames.labels(direction="out").inc(2)
    assert frames.labels(direction="in") is inbound  # one series per label set
    text = generate_latest(registry).decode()
    assert "# TYPE t_frames_total counter" in text
    assert 't_frames_total{direction="in"} 3.0' in text and 't_frames_total{direction="out"} 2.0' in text
    assert registry.get_sample_value("t_frames_total", {"direction": "in"}) == 3.0


def test_wrong_labels_are_refused() -> None:
    frames = LoopCounter("t2_frames_total", "Frames", ("direction",), registry=None)
    with pytest.raises(ValueError, match="direction"):
        frames.labels(way="in")
