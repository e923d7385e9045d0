"""Projection stores: where provider rows live (SQLite file, PostgreSQL/Supabase database, Supabase REST)."""

from .base import JobSummary, ProviderStore, StoreRejected, open_store

__all__ = ["JobSummary", "ProviderStore", "StoreRejected", "open_store"]
