"""Provider rows in a SQLite file: the embedded default, nothing to install or run.

sqlite3 is blocking, so every call runs on one dedicated worker thread that owns the connection
(sqlite3 connections must stay on the thread that made them). WAL mode lets the operator API read
while the projector writes. The schema is derived from `columns.COLUMNS`; opening an older file adds
the columns it lacks.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from haggle_contracts.state import ProviderState

from .base import JobSummary, StoreRejected
from .columns import COLUMN_NAMES, COLUMNS, SUMMARY_COLUMNS, Column, Kind, from_row, summarize_jobs, to_row

log = logging.getLogger(__name__)

T = TypeVar("T")

_SQLITE_TYPES = {
    Kind.TEXT: "TEXT",
    Kind.FLOAT: "REAL",
    Kind.INT: "INTEGER",
    Kind.BOOL: "INTEGER",
    Kind.TIMESTAMP: "TEXT",  # fixed-width ISO-8601 UTC, so it sorts chronologically
    Kind.JSON: "TEXT",
}
_TABLE = "providers"
# Errors about the values written (a string SQLite cannot encode, a constraint): the same write fails every time.
_REJECTIONS = (sqlite3.DataError, sqlite3.IntegrityError, UnicodeError, OverflowError)
# rowid is SQLite's insertion order: a job's providers share one created_at.
_ORDER = "created_at NULLS FIRST, rowid"


def _ddl(col: Column) -> str:
    if col.name == "id":
        return "id TEXT PRIMARY KEY"
    return f"{col.name} {_SQLITE_TYPES[col.kind]}"


_UPSERT = (
    f"INSERT INTO {_TABLE} ({', '.join(COLUMN_NAMES)}) VALUES ({', '.join('?' * len(COLUMN_NAMES))}) "
    f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in COLUMN_NAMES[1:])}"
)


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._conn is None:
            raise RuntimeError("SqliteStore is not open: call open() first")
        conn = self._conn
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
        except _REJECTIONS as exc:
            raise StoreRejected(f"SQLite refused the values: {exc}") from exc

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="haggle-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        log.info("sqlite store ready: %s", self.path)

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)  # autocommit: each statement is atomic
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} ({', '.join(_ddl(c) for c in COLUMNS)})")
        existing = {row["name"] for row in conn.execute(f"PRAGMA table_info({_TABLE})")}
        for col in COLUMNS:
            if col.name not in existing:
                log.info("sqlite store: adding column %s", col.name)
                conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN {_ddl(col)}")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {_TABLE}_job_id_idx ON {_TABLE} (job_id, created_at)")
        return conn

    async def close(self) -> None:
        if self._conn is None or self._executor is None:
            return
        conn, executor = self._conn, self._executor
        self._conn = self._executor = None
        await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)

    async def get(self, provider_id: str) -> ProviderState | None:
        def fetch(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(f"SELECT * FROM {_TABLE} WHERE id = ?", (provider_id,)).fetchone()
            return row

        row = await self._run(fetch)
        return from_row(dict(row)) if row is not None else None

    async def upsert(self, state: ProviderState) -> None:
        values = tuple(to_row(state, "sqlite").values())
        await self._run(lambda conn: conn.execute(_UPSERT, values))

    async def upsert_many(self, states: list[ProviderState]) -> None:
        rows = [tuple(to_row(s, "sqlite").values()) for s in states]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(write)

    async def list_job(self, job_id: str) -> list[ProviderState]:
        def fetch(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(f"SELECT * FROM {_TABLE} WHERE job_id = ? ORDER BY {_ORDER}", (job_id,)).fetchall()

        return [from_row(dict(r)) for r in await self._run(fetch)]

    async def list_jobs(self, limit: int = 100) -> list[JobSummary]:
        query = (
            f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM {_TABLE} WHERE job_id IN ("
            f" SELECT job_id FROM {_TABLE} GROUP BY job_id"
            " ORDER BY min(created_at) DESC NULLS LAST, job_id LIMIT ?"
            f") ORDER BY {_ORDER}"
        )

        def fetch(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            return [dict(r) for r in conn.execute(query, (limit,)).fetchall()]

        return summarize_jobs(await self._run(fetch), limit)

    async def reset(self) -> None:
        await self._run(lambda conn: conn.execute(f"DELETE FROM {_TABLE}"))
