"""The store interface the projector writes and the operator API reads.

A store holds one row per provider (the seed's `providers` columns plus Haggle's), exactly the
`haggle_contracts.state.ProviderState` the event fold produces, so a rebuild from the log gives
identical rows. Writes are idempotent upserts keyed by provider id; `last_seq` on each row lets the
projector skip events it already applied when JetStream redelivers them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import msgspec
from haggle_contracts.state import ProviderState


class JobSummary(msgspec.Struct, kw_only=True):
    job_id: str
    problem: str
    zip_code: str
    max_price: float
    providers: int
    terminal: int
    agreed: int
    best_price: float | None
    created_at: datetime | None
    updated_at: datetime | None


class StoreRejected(Exception):
    """The store refused the values themselves (a NUL in a PostgreSQL text column, a constraint): retrying the
    same write can never succeed. Connection trouble is `ConnectionError` instead, which is worth retrying."""


class ProviderStore(Protocol):
    async def open(self) -> None:
        """Connect and create the schema if it is missing."""

    async def close(self) -> None: ...

    async def get(self, provider_id: str) -> ProviderState | None: ...

    async def upsert(self, state: ProviderState) -> None: ...

    async def upsert_many(self, states: list[ProviderState]) -> None:
        """Write every row or none (one transaction): one event's effect is never half visible."""

    async def list_job(self, job_id: str) -> list[ProviderState]:
        """A job's providers in the order they were added."""

    async def list_jobs(self, limit: int = 100) -> list[JobSummary]:
        """Most recent jobs first."""

    async def reset(self) -> None:
        """Delete every row (used by `haggle projector rebuild`)."""


def open_store(
    projection_url: str | None,
    *,
    supabase_url: str | None = None,
    supabase_key: str | None = None,
) -> ProviderStore:
    """Pick the store from configuration: SUPABASE_URL+SUPABASE_KEY, else PROJECTION_URL (sqlite:/// or postgresql://)."""
    if supabase_url and supabase_key and not projection_url:
        from .supabase_store import SupabaseStore

        return SupabaseStore(supabase_url, supabase_key)
    url = projection_url or "sqlite:///.haggle/haggle.db"
    if url.startswith("sqlite:///"):
        from .sqlite_store import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres_store import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"PROJECTION_URL must start with sqlite:/// or postgresql:// (got {url.split(':', 1)[0]}:...)")
