"""`make bench`'s event path step against the real projector: every utterance it publishes is seen projected
(it once waited on a store method the projector no longer calls, and timed out before measuring anything)."""

from __future__ import annotations

import sys
from pathlib import Path

# `benchmarks` is a folder of the repository, not an installed package (make bench runs it from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import event_path


async def test_every_published_utterance_is_timed_into_the_projection(tmp_path: Path) -> None:
    result = await event_path.measure(tmp_path, calls=3, duration_s=1.0, interval_s=0.25, settle_s=30.0)
    assert result["utterances"] > 0
    assert (result["projected"], result["not_projected"]) == (result["utterances"], 0)
    assert result["lag_p50_ms"] is not None
