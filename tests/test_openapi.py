"""The OpenAPI document is true: schemathesis (every check, the fuzzing phase) against the real app over real
HTTP on loopback finds nothing, every reference resolves, and OPTIONS answers like the document says."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from haggle import bus
from haggle.config import Settings
from haggle.nats_embedded import EmbeddedNats
from haggle.system import System, start_system

KEY = "openapi-key"
MAX_EXAMPLES = 25  # per operation: enough to reach every status, small enough to stay quick


class SystemThread:
    """The system on its own event loop in a thread: schemathesis drives it synchronously over real HTTP."""

    def __init__(self, settings: Settings, nats_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.system: System = self._run(self._start(settings, nats_url))

    async def _start(self, settings: Settings, nats_url: str) -> System:
        nc = await bus.connect(nats_url, name="openapi-reset")
        try:
            from conftest import reset_jetstream

            await reset_jetstream(nc.jetstream())
        finally:
            await nc.close()
        return await start_system(settings, ["projector"], nats_url=nats_url, port=0)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def stop(self) -> None:
        self._run(self.system.stop(5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def api(nats_server: EmbeddedNats, tmp_path: Path) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'o.db'}", port=0, api_key=KEY)
    running = SystemThread(settings, nats_server.url)
    try:
        yield running.system.base_url
    finally:
        running.stop()


def test_every_reference_resolves_and_every_status_is_documented(api: str) -> None:
    doc = httpx.get(f"{api}/openapi.json", timeout=10).json()

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(doc):
        assert ref.startswith("#/"), ref
        target: Any = doc
        for part in ref[2:].split("/"):
            assert part in target, f"{ref} does not resolve"
            target = target[part]
    post = doc["paths"]["/jobs"]["post"]
    assert {"201", "202", "401", "409", "413", "415", "422"} <= set(post["responses"])
    assert {"401", "404"} <= set(doc["paths"]["/jobs/{job_id}"]["get"]["responses"])


def test_options_answers_with_the_documented_methods(api: str) -> None:
    r = httpx.options(f"{api}/jobs", timeout=10)
    assert r.status_code in (200, 204)
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST", "OPTIONS"}


@pytest.mark.slow
def test_schemathesis_finds_nothing(api: str) -> None:
    config = SchemathesisConfig.from_dict({
        "headers": {"Authorization": f"Bearer {KEY}"},
        # The text rule is a pattern plus a length cap: Hypothesis filters some draws, which is fine here.
        "suppress-health-check": ["filter_too_much", "too_slow"],
        "checks": {"enabled": True},
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": True}, "stateful": {"enabled": False},
                   "fuzzing": {"enabled": True}},
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
    })
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json", config=config)
    failures: list[str] = []
    tested: set[str] = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.status != Status.SKIP:
            tested.add(event.recorder.label)
        if isinstance(event, events.ScenarioFinished) and event.status in (Status.FAILURE, Status.ERROR):
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE:
                        failures.append(f"{event.recorder.label}: {check.name}: {check.failure_info}")
            if event.status == Status.ERROR:
                failures.append(f"{event.recorder.label}: error {event.recorder}")
        if isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"engine: {event}")
    assert not failures, "\n".join(failures[:20])
    assert {"POST /jobs", "GET /jobs", "GET /jobs/{job_id}", "POST /start-job/{job_id}"} <= tested, tested
