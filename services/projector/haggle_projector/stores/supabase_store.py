"""Provider rows in Supabase through its REST API (PostgREST), with the official `supabase` client.

For deployments that only have SUPABASE_URL + SUPABASE_KEY (no database password). We use the
async client (`supabase.acreate_client`): the projector is asyncio, so no worker thread is needed and
calls cancel cleanly. The client's own retries are off: the projector's consumer already backs off
and redelivers, and a GET retried with sleeps would only hide an outage. PostgREST cannot create
tables, so `open()` checks the table answers with every column and otherwise points at the migration.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from haggle_contracts.state import ProviderState
from postgrest import APIError, AsyncRequestBuilder
from postgrest.types import ReturnMethod
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from .base import JobSummary
from .columns import COLUMN_NAMES, ORDINAL, SUMMARY_COLUMNS, from_row, summarize_jobs, to_row

log = logging.getLogger(__name__)

MIGRATION = "deploy/migrations/001_providers.sql"
PAGE = 1000  # Supabase's default max-rows: larger selects are cut silently, so read in pages
T = TypeVar("T")
# PostgREST's answers when the table or a column is not there: the migration has not been applied.
_SCHEMA_ERRORS = frozenset({"PGRST205", "PGRST204", "42P01", "42703"})


class _Unavailable(Exception):
    """Supabase answered, but as a service that is down (5xx, 429): worth backing off and retrying."""


async def _raise_if_unavailable(response: httpx.Response) -> None:
    # The supabase client folds every error into APIError and drops the status; keep the one that matters.
    if response.status_code >= 500 or response.status_code == 429:
        raise _Unavailable(f"HTTP {response.status_code} from {response.request.url.path}")


class SupabaseStore:
    def __init__(
        self,
        url: str,
        key: str,
        *,
        table: str = "providers",
        schema: str = "public",
        timeout: float = 10.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"SUPABASE_URL must be an http(s) URL (got {url!r})")
        if not key:
            raise ValueError("SUPABASE_KEY is empty")
        self.url = url
        self.key = key
        self.table = table
        self.schema = schema
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncClient | None = None

    async def open(self) -> None:
        self._http = httpx.AsyncClient(timeout=self.timeout, event_hooks={"response": [_raise_if_unavailable]})
        options = AsyncClientOptions(
            schema=self.schema,
            httpx_client=self._http,
            postgrest_client_retry=False,
            auto_refresh_token=False,  # a service key, not a user session: nothing to refresh
            persist_session=False,
        )
        self._client = await acreate_client(self.url, self.key, options=options)
        check = self._rows().select(",".join(COLUMN_NAMES)).limit(1)
        try:
            await self._call("check the table", check.execute)
        except RuntimeError as exc:
            await self.close()
            if isinstance(exc.__cause__, APIError) and exc.__cause__.code in _SCHEMA_ERRORS:
                raise RuntimeError(
                    f"Supabase table {self.schema}.{self.table} is missing or lacks Haggle's columns ({exc}). "
                    f"Apply {MIGRATION} in the Supabase SQL editor, then restart."
                ) from exc
            raise
        except ConnectionError:
            await self.close()
            raise
        log.info("supabase store ready: %s (%s.%s)", self.url, self.schema, self.table)

    async def close(self) -> None:
        self._client = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _rows(self) -> AsyncRequestBuilder:
        if self._client is None:
            raise RuntimeError("SupabaseStore is not open: call open() first")
        return self._client.table(self.table)

    async def _call(self, what: str, send: Callable[[], Awaitable[T]]) -> T:
        """Run one request; transport trouble becomes ConnectionError, a PostgREST refusal RuntimeError."""
        try:
            return await send()
        except (httpx.TransportError, _Unavailable) as exc:
            raise ConnectionError(f"Supabase unreachable ({what}): {exc!r}") from exc
        except APIError as exc:
            raise RuntimeError(f"Supabase refused to {what}: {exc.message} (code {exc.code})") from exc

    async def _select_all(self, columns: str, job_id: str | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while True:
            query = self._rows().select(columns)
            if job_id is not None:
                query = query.eq("job_id", job_id)
            query = query.order("created_at", nullsfirst=True).order(ORDINAL).range(len(rows), len(rows) + PAGE - 1)
            page = (await self._call("read rows", query.execute)).data
            rows.extend(page)
            if len(page) < PAGE:
                return rows

    async def get(self, provider_id: str) -> ProviderState | None:
        query = self._rows().select("*").eq("id", provider_id).limit(1)
        data = (await self._call("read a row", query.execute)).data
        return from_row(data[0]) if data else None

    async def upsert(self, state: ProviderState) -> None:
        query = self._rows().upsert(to_row(state, "rest"), on_conflict="id", returning=ReturnMethod.minimal)
        await self._call("upsert a row", query.execute)

    async def upsert_many(self, states: list[ProviderState]) -> None:
        # One POST with every row is one INSERT statement in PostgREST: all rows or none.
        rows = [to_row(s, "rest") for s in states]
        query = self._rows().upsert(rows, on_conflict="id", returning=ReturnMethod.minimal)
        await self._call("upsert rows", query.execute)

    async def list_job(self, job_id: str) -> list[ProviderState]:
        return [from_row(r) for r in await self._select_all("*", job_id)]

    async def list_jobs(self, limit: int = 100) -> list[JobSummary]:
        # Grouped here rather than in a view: one table, one migration, and jobs are few.
        return summarize_jobs(await self._select_all(",".join(SUMMARY_COLUMNS)), limit)

    async def reset(self) -> None:
        # PostgREST on Supabase refuses a DELETE without a filter; every row has a non-empty id.
        query = self._rows().delete(returning=ReturnMethod.minimal).neq("id", "")
        await self._call("delete all rows", query.execute)
