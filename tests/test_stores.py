"""The projection stores: one behavioural suite run against SQLite, PostgreSQL and Supabase (REST).

PostgreSQL is the machine's server (`pg_url`), each test in its own throwaway schema. Supabase is the
real `supabase` client talking to the local PostgREST stand-in, which also lets us assert the exact
requests the client sends.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import psycopg
import pytest
from haggle_contracts.state import CallCost, ProviderState, Recording, Utterance
from haggle_projector.stores.base import ProviderStore
from haggle_projector.stores.columns import COLUMN_NAMES, COLUMNS, ORDINAL, SEED_COLUMNS, Kind, from_row, to_row
from haggle_projector.stores.postgres_store import PostgresStore
from haggle_projector.stores.sqlite_store import SqliteStore
from haggle_projector.stores.supabase_store import SupabaseStore
from haggle_sim.postgrest_standin import PostgrestStandin

REPO = Path(__file__).resolve().parents[1]
KEY = "service-role-key-for-tests"
T0 = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)

SEED_DDL = """
create table {table} (
    id text primary key, job_id text, service_provider text, phone_number text, zip_code text,
    problem text, max_price numeric, context_answers text, call_status text, negotiated_price numeric,
    call_transcript text
)
"""


def full_state(provider_id: str = "prov-1", job_id: str = "job-1") -> ProviderState:
    """A state with every field set to something other than its default."""
    return ProviderState(
        id=provider_id,
        job_id=job_id,
        service_provider="Ace Plumbing",
        phone_number="+14155550100",
        zip_code="94110",
        problem="Leaking water heater",
        max_price=250.5,
        context_answers="Tank is 40 gallons; garage install.",
        call_status="completed",
        negotiated_price=199.99,
        call_transcript="Agent: Hi\nProvider: Hello",
        timezone="America/Los_Angeles",
        outcome="agreed",
        attempts=2,
        max_attempts=4,
        call_sid="CA" + "0" * 32,
        initial_quote=320.0,
        price_type="flat",
        conditions="weekday morning",
        evidence=["I can do it for 199.99", "Flat rate, includes parts"],
        extraction_method="llm",
        disagreement="regex saw 200",
        answered_by="human",
        twilio_status="completed",
        end_reason="agent_hangup",
        voicemail_left=True,
        failure_reason="first attempt: busy",
        retry_at=T0 + timedelta(minutes=5, microseconds=1),
        cancelled=True,
        transcript=[
            Utterance(utterance_id="u1", attempt=2, seq=1, role="assistant", text="Hi", spoken_at=T0),
            Utterance(
                utterance_id="u2",
                attempt=2,
                seq=2,
                role="user",
                text="Hello, ünïcode ☎",
                spoken_at=T0 + timedelta(seconds=1, microseconds=7),
                interrupted=True,
            ),
        ],
        costs=[
            CallCost(attempt=1, call_sid="CA1", twilio_price=None, realtime_cost=0.0125, total=0.0125),
            CallCost(attempt=2, call_sid="CA2", twilio_price=0.028, realtime_cost=0.1427, total=0.1707),
        ],
        recordings=[Recording(attempt=2, call_sid="CA2", recording_sid="RE1", status="completed",
                              url="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1", duration_s=171.0,
                              channels=2)],
        created_at=T0,
        dialed_at=T0 + timedelta(seconds=2),
        answered_at=T0 + timedelta(seconds=9, microseconds=123456),
        ended_at=T0 + timedelta(minutes=3),
        duration_s=171.25,
        updated_at=T0 + timedelta(minutes=3, microseconds=999999),
        last_seq=4242,
        round=2,
        booking_status="confirmed",
        appointment="Sat Jan 10, 9am",
        booking_round=3,
        visit_fee=49.0,
        includes_parts=True,
        warranty="90 days",
        earliest_availability="2026-01-10",
    )


def provider(pid: str, job_id: str, created_at: datetime | None = T0, **changes: object) -> ProviderState:
    base = ProviderState(
        id=pid,
        job_id=job_id,
        service_provider=f"Provider {pid}",
        phone_number="+14155550100",
        zip_code="94110",
        problem=f"problem of {job_id}",
        max_price=300.0,
        created_at=created_at,
        updated_at=created_at,
    )
    return msgspec.structs.replace(base, **changes)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgSchema:
    url: str
    name: str


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[PgSchema]:
    """A schema of its own for one test, dropped afterwards (sync, so async fixtures can request it)."""
    name = f"haggle_test_{uuid.uuid4().hex[:10]}"
    yield PgSchema(pg_url, name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"drop schema if exists {name} cascade")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "supabase"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ProviderStore]:
    if request.param == "sqlite":
        s: ProviderStore = SqliteStore(tmp_path / "nested" / "haggle.db")
        await s.open()
        yield s
        await s.close()
    elif request.param == "postgres":
        pg: PgSchema = request.getfixturevalue("pg_schema")
        s = PostgresStore(pg.url, schema=pg.name)
        await s.open()
        yield s
        await s.close()
    else:
        async with PostgrestStandin({"providers": COLUMN_NAMES}, api_key=KEY) as sb:
            s = SupabaseStore(sb.url, KEY)
            await s.open()
            yield s
            await s.close()


# --- the columns mapping -----------------------------------------------------------------------------


def test_every_field_is_a_column_seed_columns_first() -> None:
    assert COLUMN_NAMES == tuple(f.name for f in msgspec.structs.fields(ProviderState))
    assert COLUMN_NAMES[: len(SEED_COLUMNS)] == SEED_COLUMNS
    kinds = {c.name: c.kind for c in COLUMNS}
    assert kinds["transcript"] is kinds["evidence"] is Kind.JSON
    assert kinds["created_at"] is Kind.TIMESTAMP and kinds["cancelled"] is Kind.BOOL


@pytest.mark.parametrize("style", ["sqlite", "postgres", "rest"])
def test_row_round_trip_is_exact(style: str) -> None:
    state = full_state()
    back = from_row(to_row(state, style))  # type: ignore[arg-type]
    assert back == state
    assert back.created_at is not None and back.created_at.tzinfo is UTC
    assert back.transcript[1].spoken_at == T0 + timedelta(seconds=1, microseconds=7)


def test_sqlite_row_encodings() -> None:
    row = to_row(full_state(), "sqlite")
    assert row["created_at"] == "2025-03-14T15:09:26.535897+00:00"
    assert row["cancelled"] == 1
    assert msgspec.json.decode(row["evidence"]) == full_state().evidence
    # Zero microseconds still print, so text order is time order.
    assert to_row(provider("p", "j", created_at=T0.replace(microsecond=0)), "sqlite")["created_at"].endswith(
        ".000000+00:00"
    )


def test_deploy_migration_is_the_store_migration() -> None:
    packaged = REPO / "services/projector/haggle_projector/stores/providers.sql"
    assert (REPO / "deploy/migrations/001_providers.sql").read_bytes() == packaged.read_bytes()


# --- the same behaviour from every store ---------------------------------------------------------------


async def test_round_trip_full_state(store: ProviderStore) -> None:
    state = full_state()
    for field in msgspec.structs.fields(ProviderState):
        default = field.default if field.default_factory is msgspec.NODEFAULT else field.default_factory()
        assert getattr(state, field.name) != default, f"full_state leaves {field.name} at its default"
    await store.upsert(state)
    assert await store.get(state.id) == state
    assert await store.get("nobody") is None


async def test_upsert_replaces(store: ProviderStore) -> None:
    first = provider("p1", "job-a", attempts=1, last_seq=3)
    await store.upsert(first)
    second = msgspec.structs.replace(
        full_state("p1", "job-a"), call_status="failed", negotiated_price=None, evidence=[], last_seq=9
    )
    await store.upsert(second)
    assert await store.get("p1") == second
    assert await store.list_job("job-a") == [second]


async def test_list_job_in_the_order_added(store: ProviderStore) -> None:
    later = provider("p0", "job-a", created_at=T0 + timedelta(hours=1))  # a re-start added it later
    trio = [provider(pid, "job-a") for pid in ("p3", "p1", "p2")]
    await store.upsert(later)
    for p in trio:
        await store.upsert(p)
    await store.upsert(provider("other", "job-b"))
    await store.upsert(msgspec.structs.replace(trio[0], call_status="dialing"))  # an update keeps its place
    assert [p.id for p in await store.list_job("job-a")] == ["p3", "p1", "p2", "p0"]
    assert await store.list_job("job-none") == []


async def test_list_jobs_summaries(store: ProviderStore) -> None:
    older, newer = T0, T0 + timedelta(days=1)
    rows = [
        provider("a1", "job-old", older, call_status="completed", outcome="agreed", negotiated_price=180.0),
        provider("a2", "job-old", older, call_status="completed", outcome="agreed", negotiated_price=150.0),
        provider(
            "a3", "job-old", older, call_status="failed", outcome="no_answer", updated_at=older + timedelta(hours=2)
        ),
        provider("a4", "job-old", older, call_status="queued", outcome="busy", problem="override"),
        provider("b1", "job-new", newer, call_status="in_progress"),
    ]
    for row in rows:
        await store.upsert(row)
    jobs = await store.list_jobs()
    assert [j.job_id for j in jobs] == ["job-new", "job-old"]
    old = jobs[1]
    assert (old.providers, old.terminal, old.agreed, old.best_price) == (4, 3, 2, 150.0)
    assert (old.problem, old.zip_code, old.max_price) == ("problem of job-old", "94110", 300.0)
    assert (old.created_at, old.updated_at) == (older, older + timedelta(hours=2))
    new = jobs[0]
    assert (new.providers, new.terminal, new.agreed, new.best_price) == (1, 0, 0, None)
    assert [j.job_id for j in await store.list_jobs(limit=1)] == ["job-new"]


async def test_reset_empties(store: ProviderStore) -> None:
    await store.upsert(full_state("p1", "job-a"))
    await store.upsert(full_state("p2", "job-b"))
    await store.reset()
    assert await store.get("p1") is None
    assert await store.list_jobs() == []
    await store.upsert(full_state("p1", "job-a"))  # usable again, as `projector rebuild` needs
    assert await store.get("p1") == full_state("p1", "job-a")


# --- SQLite ----------------------------------------------------------------------------------------


async def test_sqlite_upgrades_a_seed_era_file(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"create table providers ({', '.join(SEED_COLUMNS)}, primary key (id))")
        conn.execute(
            "insert into providers values ('old', 'job-s', 'Seed Co', '+1', '02139', 'clog', 120, null, "
            "'completed', 99.5, 'Agent: hi')"
        )
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        old = await store.get("old")
        assert old is not None
        assert (old.negotiated_price, old.call_status, old.context_answers) == (99.5, "completed", "")
        assert (old.attempts, old.transcript, old.evidence, old.cancelled) == (0, [], [], False)
        await store.upsert(full_state("new", "job-s"))
        assert [p.id for p in await store.list_job("job-s")] == ["old", "new"]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        columns = [r[1] for r in conn.execute("pragma table_info(providers)")]
        mode = conn.execute("pragma journal_mode").fetchone()[0]
    conn.close()
    assert set(COLUMN_NAMES) <= set(columns) and mode == "wal"


async def test_sqlite_needs_open(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="open"):
        await SqliteStore(tmp_path / "x.db").get("p")


# --- PostgreSQL ------------------------------------------------------------------------------------


async def _pg_columns(url: str, schema: str, table: str) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select column_name, data_type from information_schema.columns where table_schema = %s and table_name = %s",
            (schema, table),
        )
        return {name: dtype for name, dtype in await cur.fetchall()}


@pytest.mark.postgres
async def test_postgres_store_is_unavailable_until_migrated_and_readers_cannot_spoil_the_migration(
        pg_schema: PgSchema) -> None:
    """Reads that come while the store opens (the API polled while PostgreSQL came back) are a 503's
    ConnectionError, not an error about a missing table that aborted open()'s migration on the shared connection
    and left the service without a projection."""
    store = PostgresStore(pg_schema.url, schema=pg_schema.name)
    with pytest.raises(ConnectionError, match="not open yet"):
        await store.list_job("j")

    async def reader() -> list[ProviderState]:
        while True:
            try:
                return await store.list_job("j")
            except ConnectionError:
                await asyncio.sleep(0)  # open() is on its way: yield to it, under the bound below

    try:
        _, rows = await asyncio.wait_for(asyncio.gather(store.open(), reader()), 30)
        assert rows == []
    finally:
        await store.close()
    with pytest.raises(ConnectionError, match="not open yet"):  # closed is not open either
        await store.get("x")


@pytest.mark.postgres
async def test_postgres_upgrades_a_seed_era_table(pg_schema: PgSchema) -> None:
    async with await psycopg.AsyncConnection.connect(pg_schema.url, autocommit=True) as conn:
        await conn.execute(f"create schema {pg_schema.name}")
        await conn.execute(SEED_DDL.format(table=f"{pg_schema.name}.providers"))
        await conn.execute(
            f"insert into {pg_schema.name}.providers values"
            " ('old', 'job-s', 'Seed Co', '+1', '02139', 'clog', 120, null, 'completed', 99.50, 'Agent: hi')"
        )
    store = PostgresStore(pg_schema.url, schema=pg_schema.name)
    await store.open()
    await store.open()  # the migration is idempotent
    try:
        old = await store.get("old")
        assert old is not None
        assert (old.max_price, old.negotiated_price, old.context_answers) == (120.0, 99.5, "")
        assert (old.attempts, old.max_attempts, old.transcript, old.evidence) == (0, 3, [], [])
        await store.upsert(full_state("new", "job-s"))
        assert [p.id for p in await store.list_job("job-s")] == ["old", "new"]
        assert await store.get("new") == full_state("new", "job-s")
    finally:
        await store.close()
    columns = await _pg_columns(pg_schema.url, pg_schema.name, "providers")
    assert set(COLUMN_NAMES) | {ORDINAL} <= set(columns)


@pytest.mark.postgres
async def test_postgres_column_types_and_separate_tables(pg_schema: PgSchema) -> None:
    a = PostgresStore(pg_schema.url, schema=pg_schema.name)
    b = PostgresStore(pg_schema.url, schema=pg_schema.name, table="providers_b")
    await a.open()
    await b.open()  # its indexes are named after its table, so nothing collides with a's
    try:
        await a.upsert(provider("p1", "job-a"))
        assert await b.get("p1") is None
    finally:
        await a.close()
        await b.close()
    expected = {
        Kind.TEXT: "text",
        Kind.FLOAT: "double precision",
        Kind.BOOL: "boolean",
        Kind.TIMESTAMP: "timestamp with time zone",
        Kind.JSON: "jsonb",
    }
    for table in ("providers", "providers_b"):
        columns = await _pg_columns(pg_schema.url, pg_schema.name, table)
        for col in COLUMNS:
            want = ("integer", "bigint") if col.kind is Kind.INT else (expected[col.kind],)
            assert columns[col.name] in want, (table, col.name, columns[col.name])


@pytest.mark.postgres
async def test_postgres_reconnects_after_losing_its_connection(pg_schema: PgSchema) -> None:
    app = f"haggle-{pg_schema.name}"
    store = PostgresStore(f"{pg_schema.url}?application_name={app}", schema=pg_schema.name)
    await store.open()
    try:
        await store.upsert(provider("p1", "job-a"))
        async with await psycopg.AsyncConnection.connect(pg_schema.url, autocommit=True) as admin:
            cur = await admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s", (app,)
            )
            assert [r[0] for r in await cur.fetchall()] == [True]
        with pytest.raises(ConnectionError):
            await store.get("p1")
        assert await store.get("p1") == provider("p1", "job-a")  # the next call reconnects
    finally:
        await store.close()


async def test_postgres_unreachable_is_a_connection_error() -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{closed_port()}/test", connect_timeout=2)
    with pytest.raises(ConnectionError, match="unreachable"):
        await store.open()


def test_postgres_rejects_unsafe_identifiers() -> None:
    with pytest.raises(ValueError, match="table"):
        PostgresStore("postgresql://localhost/x", table="providers; drop table x")


# --- Supabase (REST) -------------------------------------------------------------------------------


async def test_supabase_sends_exactly_these_requests() -> None:
    state = full_state()
    async with PostgrestStandin({"providers": COLUMN_NAMES}, api_key=KEY) as sb:
        store = SupabaseStore(sb.url, KEY)
        await store.open()
        await store.upsert(state)
        assert await store.get(state.id) == state
        assert await store.list_job(state.job_id) == [state]
        assert len(await store.list_jobs()) == 1
        await store.reset()
        await store.close()
        assert sb.rows("providers") == []

    order = ("order", "created_at.asc.nullsfirst,ordinal.asc")
    page = [("offset", "0"), ("limit", "1000")]
    expected = [
        ("GET", [("select", ",".join(COLUMN_NAMES)), ("limit", "1")], None, None),
        ("POST", [("on_conflict", "id")], "return=minimal,resolution=merge-duplicates", to_row(state, "rest")),
        ("GET", [("select", "*"), ("id", f"eq.{state.id}"), ("limit", "1")], None, None),
        ("GET", [("select", "*"), ("job_id", f"eq.{state.job_id}"), order, *page], None, None),
        (
            "GET",
            [
                (
                    "select",
                    "job_id,problem,zip_code,max_price,call_status,outcome,negotiated_price,created_at,updated_at",
                ),
                order,
                *page,
            ],
            None,
            None,
        ),
        ("DELETE", [("id", "neq.")], "return=minimal", {}),
    ]
    assert len(sb.requests) == len(expected)
    for req, (method, params, prefer, body) in zip(sb.requests, expected, strict=True):
        assert (req.method, req.path, req.params) == (method, "/rest/v1/providers", params)
        assert req.headers["apikey"] == KEY
        assert req.headers["authorization"] == f"Bearer {KEY}"
        assert req.headers.get("prefer") == prefer
        assert req.body == body
    # JSON columns travel as JSON (jsonb), timestamps as ISO-8601 UTC.
    sent = sb.requests[1].body
    assert sent["evidence"] == state.evidence
    assert sent["transcript"][1]["spoken_at"] == "2025-03-14T15:09:27.535904Z"
    assert sent["created_at"] == "2025-03-14T15:09:26.535897+00:00"


async def test_supabase_pages_past_max_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    from haggle_projector.stores import supabase_store

    monkeypatch.setattr(supabase_store, "PAGE", 2)
    async with PostgrestStandin({"providers": COLUMN_NAMES}, api_key=KEY) as sb:
        store = SupabaseStore(sb.url, KEY)
        await store.open()
        for pid in ("p1", "p2", "p3", "p4", "p5"):
            await store.upsert(provider(pid, "job-a"))
        assert [p.id for p in await store.list_job("job-a")] == ["p1", "p2", "p3", "p4", "p5"]
        await store.close()
    offsets = [dict(r.params).get("offset") for r in sb.requests if r.method == "GET"][1:]
    assert offsets == ["0", "2", "4"]


@pytest.mark.parametrize("tables", [{}, {"providers": SEED_COLUMNS}], ids=["no-table", "seed-era-table"])
async def test_supabase_open_points_at_the_migration(tables: dict[str, tuple[str, ...]]) -> None:
    async with PostgrestStandin(tables, api_key=KEY) as sb:
        with pytest.raises(RuntimeError, match=r"deploy/migrations/001_providers\.sql"):
            await SupabaseStore(sb.url, KEY).open()


async def test_supabase_wrong_key_is_refused() -> None:
    async with PostgrestStandin({"providers": COLUMN_NAMES}, api_key=KEY) as sb:
        with pytest.raises(RuntimeError, match="Invalid API key") as refused:
            await SupabaseStore(sb.url, "not-the-key").open()
    assert "migrations" not in str(refused.value)  # a bad key is not a missing table


async def test_supabase_down_for_a_while_then_back() -> None:
    async with PostgrestStandin({"providers": COLUMN_NAMES}, api_key=KEY) as sb:
        store = SupabaseStore(sb.url, KEY)
        await store.open()
        sb.unavailable = True
        with pytest.raises(ConnectionError, match="503"):
            await store.upsert(provider("p1", "job-a"))
        sb.unavailable = False
        await store.upsert(provider("p1", "job-a"))
        assert await store.get("p1") == provider("p1", "job-a")
        await store.close()


async def test_supabase_unreachable_is_a_connection_error() -> None:
    with pytest.raises(ConnectionError, match="unreachable"):
        await SupabaseStore(f"http://127.0.0.1:{closed_port()}", KEY, timeout=2).open()


async def test_standin_behaves_like_supabase() -> None:
    async with PostgrestStandin({"providers": COLUMN_NAMES}, api_key=KEY) as sb:
        rest = f"{sb.url}/rest/v1/providers"
        auth = {"apikey": KEY, "Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(rest)).status_code == 401  # no apikey
            unfiltered = await http.delete(rest, headers=auth)
            assert (unfiltered.status_code, unfiltered.json()["code"]) == (400, "21000")
            row = {"id": "p1", "job_id": "j"}
            assert (await http.post(rest, json=row, headers=auth)).status_code == 201
            dup = await http.post(rest, json=row, headers=auth)
            assert (dup.status_code, dup.json()["code"]) == (409, "23505")
            bad = await http.post(rest, json={"id": "p2", "nope": 1}, headers=auth)
            assert (bad.status_code, bad.json()["code"]) == (400, "PGRST204")
            missing = await http.get(f"{sb.url}/rest/v1/nope", headers=auth)
            assert (missing.status_code, missing.json()["code"]) == (404, "PGRST205")
        assert sb.rows("providers") == [{c: None for c in (*COLUMN_NAMES, ORDINAL)} | row | {ORDINAL: 1}]
