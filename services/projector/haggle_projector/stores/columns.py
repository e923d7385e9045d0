"""The `providers` columns, derived from `ProviderState`, and how each store serializes them.

Every store writes the same columns with the same names, so this module is the one place that maps a
`ProviderState` field to a column and a Python value to what SQLite, psycopg or PostgREST expect.
The column list is derived from the struct itself: a field added to `ProviderState` becomes a column
(or an import-time error if its type has no mapping yet), so the stores cannot drift from the fold.
Round trips are exact: state -> row -> state gives an equal state, datetimes in UTC with microseconds.
"""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Union, get_args, get_origin

import msgspec
from haggle_contracts.state import TERMINAL_CALL_STATUSES, ProviderState

from .base import JobSummary

# The seed's `providers` columns, in the seed's order; they lead the table.
SEED_COLUMNS: tuple[str, ...] = (
    "id",
    "job_id",
    "service_provider",
    "phone_number",
    "zip_code",
    "problem",
    "max_price",
    "context_answers",
    "call_status",
    "negotiated_price",
    "call_transcript",
)

# A store-only column (not a ProviderState field): insertion order, so a job's providers list in the
# order they were added even though they share one `created_at`. SQLite uses its rowid instead.
ORDINAL = "ordinal"

# What `list_jobs` needs from each row.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "job_id",
    "problem",
    "zip_code",
    "max_price",
    "call_status",
    "outcome",
    "negotiated_price",
    "created_at",
    "updated_at",
)

AGREED = "agreed"

Style = Literal["sqlite", "postgres", "rest"]


class Kind(enum.Enum):
    TEXT = "text"
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    nullable: bool
    type: Any  # the field's annotation, used to rebuild JSON values into Structs


_SCALAR_KINDS: dict[Any, Kind] = {
    str: Kind.TEXT,
    float: Kind.FLOAT,
    int: Kind.INT,
    bool: Kind.BOOL,
    datetime: Kind.TIMESTAMP,
}


def _column(field: msgspec.structs.FieldInfo) -> Column:
    tp = field.type
    nullable = False
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        nullable = len(args) < len(get_args(tp))
        if len(args) != 1:
            raise TypeError(f"ProviderState.{field.name}: no column mapping for {tp!r}")
        tp = args[0]
    if tp in _SCALAR_KINDS:
        kind = _SCALAR_KINDS[tp]
    elif get_origin(tp) is list:
        kind = Kind.JSON
    else:
        raise TypeError(f"ProviderState.{field.name}: no column mapping for {tp!r}")
    return Column(field.name, kind, nullable, field.type)


def _columns() -> tuple[Column, ...]:
    cols = tuple(_column(f) for f in msgspec.structs.fields(ProviderState))
    if tuple(c.name for c in cols[: len(SEED_COLUMNS)]) != SEED_COLUMNS:
        raise TypeError("ProviderState must start with the seed's providers columns, in order")
    return cols


COLUMNS: tuple[Column, ...] = _columns()
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
_FIELDS = {f.name: f for f in msgspec.structs.fields(ProviderState)}


def format_timestamp(value: datetime) -> str:
    """Fixed-width ISO-8601 in UTC, so text comparison in SQLite is chronological."""
    if value.tzinfo is None:
        # The log's timestamps are aware; a naive one can only be UTC written carelessly.
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse_timestamp(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _encode(col: Column, value: Any, style: Style) -> Any:
    if value is None:
        return None
    if col.kind is Kind.JSON:
        if style == "rest":
            return msgspec.to_builtins(value)
        return msgspec.json.encode(value).decode()  # TEXT in SQLite, cast to jsonb in Postgres
    if col.kind is Kind.TIMESTAMP:
        return value.astimezone(UTC) if style == "postgres" else format_timestamp(value)
    if col.kind is Kind.BOOL and style == "sqlite":
        return int(value)
    return value


def to_row(state: ProviderState, style: Style) -> dict[str, Any]:
    """One row in column order: JSON columns as text (sqlite/postgres) or JSON values (rest)."""
    return {c.name: _encode(c, getattr(state, c.name), style) for c in COLUMNS}


def decode_value(col: Column, value: Any) -> Any:
    """A stored value back to its field's Python value, whichever store or driver produced it."""
    if value is None:
        return None
    match col.kind:
        case Kind.JSON:
            data = json.loads(value) if isinstance(value, str | bytes) else value
            return msgspec.convert(data, col.type)
        case Kind.TIMESTAMP:
            return parse_timestamp(value)
        case Kind.FLOAT:
            return float(value)  # a seed-era numeric column comes back as Decimal
        case Kind.INT:
            return int(value)
        case Kind.BOOL:
            return bool(value)
        case _:
            return str(value)


def _missing(col: Column) -> Any:
    """The value for a NULL in a non-nullable column (rows written before the column existed)."""
    field = _FIELDS[col.name]
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return {Kind.TEXT: "", Kind.FLOAT: 0.0, Kind.INT: 0, Kind.BOOL: False}.get(col.kind)


def from_row(row: Mapping[str, Any]) -> ProviderState:
    """A stored row (extra columns ignored) back to the ProviderState that produced it."""
    values: dict[str, Any] = {}
    for col in COLUMNS:
        value = decode_value(col, row.get(col.name))
        values[col.name] = _missing(col) if value is None and not col.nullable else value
    return ProviderState(**values)


def summarize_jobs(rows: Iterable[Mapping[str, Any]], limit: int) -> list[JobSummary]:
    """Group provider rows (SUMMARY_COLUMNS, in list_job order) into job summaries, most recent first.

    The job's problem, zip code and price come from its first provider (per-provider overrides exist).
    """
    jobs: dict[str, JobSummary] = {}
    for raw in rows:
        row = {name: decode_value(BY_NAME[name], raw.get(name)) for name in SUMMARY_COLUMNS}
        job = jobs.get(row["job_id"])
        if job is None:
            job = jobs[row["job_id"]] = JobSummary(
                job_id=row["job_id"],
                problem=row["problem"] or "",
                zip_code=row["zip_code"] or "",
                max_price=row["max_price"] or 0.0,
                providers=0,
                terminal=0,
                agreed=0,
                best_price=None,
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            )
        job.providers += 1
        job.terminal += row["call_status"] in TERMINAL_CALL_STATUSES
        job.created_at = _extreme(min, job.created_at, row["created_at"])
        job.updated_at = _extreme(max, job.updated_at, row["updated_at"])
        price = row["negotiated_price"]
        if row["outcome"] == AGREED:
            job.agreed += 1
            if price is not None and (job.best_price is None or price < job.best_price):
                job.best_price = price
    ordered = sorted(jobs.values(), key=lambda j: j.job_id)
    # Newest first; jobs without a timestamp (seed-era rows) last.
    ordered.sort(key=lambda j: j.created_at.timestamp() if j.created_at else float("-inf"), reverse=True)
    return ordered[:limit]


def _extreme(pick: Any, a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return pick(a, b)
