"""Provider rows in PostgreSQL (a plain server or a Supabase database connection string).

Opening the store applies `providers.sql` (the same file shipped as deploy/migrations/001_providers.sql),
which creates the table or upgrades a seed-era one in place. A lost connection surfaces as
`ConnectionError` so the projector's consumer can back off and redeliver; the next call reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import re
from importlib import resources
from typing import Any

import psycopg
from haggle_contracts.state import ProviderState
from psycopg import sql
from psycopg.rows import dict_row

from .base import JobSummary, StoreRejected
from .columns import COLUMN_NAMES, COLUMNS, ORDINAL, SUMMARY_COLUMNS, Kind, from_row, summarize_jobs, to_row

log = logging.getLogger(__name__)

MIGRATION_FILE = "providers.sql"
# Errors about the values written, not the connection: the same write fails the same way every time.
_REJECTIONS = (psycopg.DataError, psycopg.IntegrityError, UnicodeError)
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _primary(exc: Exception) -> str:
    """The error's first line: its DETAIL quotes the row, store-only columns included, which a rebuild changes."""
    return str(exc).split("\n", 1)[0]


def migration_sql(table: str = "providers") -> str:
    """The migration text, with the table (and its index names) renamed when `table` is not `providers`."""
    text = resources.files(__package__).joinpath(MIGRATION_FILE).read_text(encoding="utf-8")
    return text if table == "providers" else re.sub(r"\bproviders", table, text)


def _identifier(kind: str, value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"Postgres {kind} name must match {_IDENTIFIER.pattern} (got {value!r})")
    return value


class PostgresStore:
    def __init__(
        self,
        url: str,
        *,
        table: str = "providers",
        schema: str = "public",
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.table = _identifier("table", table)
        self.schema = _identifier("schema", schema)
        self.connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._migrated = False
        self._connect_lock = asyncio.Lock()
        self._qualified = sql.Identifier(self.schema, self.table)
        self._upsert = self._upsert_statement()

    def _upsert_statement(self) -> sql.Composed:
        names = [sql.Identifier(n) for n in COLUMN_NAMES]
        values = [sql.SQL("%s::jsonb" if c.kind is Kind.JSON else "%s") for c in COLUMNS]
        updates = [sql.SQL("{0} = excluded.{0}").format(n) for n in names[1:]]
        return sql.SQL("insert into {t} ({cols}) values ({vals}) on conflict (id) do update set {upd}").format(
            t=self._qualified,
            cols=sql.SQL(", ").join(names),
            vals=sql.SQL(", ").join(values),
            upd=sql.SQL(", ").join(updates),
        )

    async def open(self) -> None:
        conn = await self._connection()
        try:
            async with conn.transaction():
                # Two projectors starting together must not race on CREATE TABLE.
                await conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema}.{self.table}",))
                if self.schema != "public":  # creating `public` would need a privilege the role may lack
                    await conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema)))
                # SET LOCAL lasts for this transaction only, which is safe behind a transaction pooler.
                await conn.execute("select set_config('search_path', %s, true)", (self.schema,))
                await conn.execute(migration_sql(self.table).encode())
        except psycopg.OperationalError as exc:
            await self._drop(conn)
            raise ConnectionError(f"PostgreSQL store lost its connection while migrating: {exc}") from exc
        self._migrated = True
        log.info("postgres store ready: %s.%s", self.schema, self.table)

    async def close(self) -> None:
        self._migrated = False
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _migrated_connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        # Until open() has migrated, the table may not exist, and a query on the shared connection would run
        # inside open()'s transaction and abort it. The store is simply not there yet: the caller's 503.
        if not self._migrated:
            raise ConnectionError("PostgreSQL store is not open yet (still connecting or migrating)")
        return await self._connection()

    async def _connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        async with self._connect_lock:
            if self._conn is not None and not self._conn.closed and not self._conn.broken:
                return self._conn
            try:
                # prepare_threshold=None: no server-side prepared statements, because Supabase's
                # transaction pooler (and PgBouncer in transaction mode) hands each transaction a
                # different backend that does not know statements prepared on another.
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    prepare_threshold=None,
                    row_factory=dict_row,
                    connect_timeout=max(1, round(self.connect_timeout)),
                )
            except psycopg.OperationalError as exc:
                raise ConnectionError(f"PostgreSQL store unreachable: {exc}") from exc
            return self._conn

    async def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._conn is conn:
            self._conn = None
        try:
            await conn.close()
        except psycopg.Error:
            log.debug("closing a broken connection failed", exc_info=True)

    async def _fetch(self, query: sql.Composable, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        conn = await self._migrated_connection()
        try:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []
        except psycopg.OperationalError as exc:
            await self._drop(conn)
            raise ConnectionError(f"PostgreSQL store connection failed: {exc}") from exc
        except _REJECTIONS as exc:
            raise StoreRejected(f"PostgreSQL refused the values: {_primary(exc)}") from exc

    async def get(self, provider_id: str) -> ProviderState | None:
        rows = await self._fetch(sql.SQL("select * from {} where id = %s").format(self._qualified), (provider_id,))
        return from_row(rows[0]) if rows else None

    async def upsert(self, state: ProviderState) -> None:
        await self._fetch(self._upsert, tuple(to_row(state, "postgres").values()))

    async def upsert_many(self, states: list[ProviderState]) -> None:
        conn = await self._migrated_connection()
        try:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(self._upsert, [tuple(to_row(s, "postgres").values()) for s in states])
        except psycopg.OperationalError as exc:
            await self._drop(conn)
            raise ConnectionError(f"PostgreSQL store connection failed: {exc}") from exc
        except _REJECTIONS as exc:
            raise StoreRejected(f"PostgreSQL refused the values: {_primary(exc)}") from exc

    async def list_job(self, job_id: str) -> list[ProviderState]:
        query = sql.SQL("select * from {} where job_id = %s order by created_at nulls first, {}").format(
            self._qualified, sql.Identifier(ORDINAL)
        )
        return [from_row(r) for r in await self._fetch(query, (job_id,))]

    async def list_jobs(self, limit: int = 100) -> list[JobSummary]:
        query = sql.SQL(
            "select {cols} from {t} where job_id in ("
            " select job_id from {t} group by job_id"
            " order by min(created_at) desc nulls last, job_id limit %s"
            ") order by created_at nulls first, {ordinal}"
        ).format(
            cols=sql.SQL(", ").join(map(sql.Identifier, SUMMARY_COLUMNS)),
            t=self._qualified,
            ordinal=sql.Identifier(ORDINAL),
        )
        return summarize_jobs(await self._fetch(query, (limit,)), limit)

    async def reset(self) -> None:
        await self._fetch(sql.SQL("delete from {}").format(self._qualified))
