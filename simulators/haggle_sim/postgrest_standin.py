"""A local stand-in for Supabase's REST API (PostgREST behind Supabase's API gateway).

Just enough of PostgREST for the `supabase` client's table calls: GET/HEAD with `select`, column
filters (`eq`, `neq`, `is`, `in`), `order`, `limit`, `offset`; POST inserts and upserts
(`Prefer: resolution=merge-duplicates|ignore-duplicates`, `on_conflict`); DELETE with a filter. Rows
live in memory. Like Supabase it rejects requests without a valid `apikey` header (401), refuses a
DELETE without a WHERE clause (pg-safeupdate), and answers unknown tables and columns with PostgREST's
error codes. Every request is recorded (method, path, query params, headers, JSON body) so tests can
assert exactly what the client sent.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from haggle_sim.http_server import serve_app

log = logging.getLogger(__name__)

_RESERVED = frozenset({"select", "order", "limit", "offset", "on_conflict", "columns"})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, None when there was no body


class PostgrestError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        body = {"code": self.code, "details": None, "hint": None, "message": self.message}
        return JSONResponse(body, status_code=self.status)


def _text(value: Any) -> str | None:
    """A stored JSON value as PostgREST compares it with a filter's text (None is SQL NULL)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _matches(row: Mapping[str, Any], column: str, expr: str) -> bool:
    negate = expr.startswith("not.")
    op, _, arg = expr.removeprefix("not.").partition(".")
    value = _text(row.get(column))
    match op:
        case "is":
            result = {"null": value is None, "true": value == "true", "false": value == "false"}.get(arg)
            if result is None:
                raise PostgrestError(400, "PGRST100", f"failed to parse filter ({expr})")
            return result != negate
        case "eq" | "neq" | "in":
            if value is None:
                return False  # SQL: a comparison with NULL is never true, negated or not
            if op == "in":
                options = [o.strip().strip('"') for o in arg.removeprefix("(").removesuffix(")").split(",")]
                hit = value in options
            else:
                hit = (value == arg) == (op == "eq")
            return hit != negate
    raise PostgrestError(400, "PGRST100", f"unsupported operator in filter ({expr})")


def _sort(rows: list[dict[str, Any]], order: str) -> list[dict[str, Any]]:
    # Stable sorts applied from the last key to the first give a multi-key ORDER BY.
    for term in reversed(order.split(",")):
        column, *mods = term.split(".")
        desc = "desc" in mods
        nulls_first = "nullsfirst" in mods or (desc and "nullslast" not in mods)  # Postgres defaults
        present = [r for r in rows if r.get(column) is not None]
        absent = [r for r in rows if r.get(column) is None]
        present.sort(key=lambda r, c=column: r[c], reverse=desc)
        rows = absent + present if nulls_first else present + absent
    return rows


class PostgrestStandin:
    """`async with PostgrestStandin({"providers": [...columns]}, api_key=...) as sb:` then `sb.url`."""

    def __init__(
        self,
        tables: Mapping[str, Iterable[str]],
        *,
        api_key: str,
        primary_key: str = "id",
        serial_column: str | None = "ordinal",
        schema: str = "public",
    ) -> None:
        self.columns = {
            name: frozenset(cols) | ({serial_column} if serial_column else set()) for name, cols in tables.items()
        }
        self.api_key = api_key
        self.primary_key = primary_key
        self.serial_column = serial_column
        self.schema = schema
        self.tables: dict[str, dict[Any, dict[str, Any]]] = {name: {} for name in tables}
        self.requests: list[RecordedRequest] = []
        # While True, answer like a Supabase whose database is down (PostgREST's 503).
        self.unavailable = False
        self._serial = 0
        self._http = contextlib.AsyncExitStack()
        self.url = ""
        self.app = FastAPI()
        self.app.add_api_route("/rest/v1/{table}", self._handle, methods=["GET", "HEAD", "POST", "DELETE", "OPTIONS"])

    def rows(self, table: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.tables[table].values()]

    async def __aenter__(self) -> PostgrestStandin:
        served = await self._http.enter_async_context(serve_app(self.app, name="PostgREST stand-in"))
        self.url = served.base_url
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _handle(self, table: str, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return PostgrestError(400, "PGRST102", "Empty or invalid json").response()
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                params=list(request.query_params.multi_items()),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        key = request.headers.get("apikey")
        if key is None:
            return JSONResponse({"message": "No API key found in request"}, status_code=401)
        if key != self.api_key:
            return JSONResponse({"message": "Invalid API key"}, status_code=401)
        if self.unavailable:
            return PostgrestError(503, "PGRST001", "Database client error. Retrying the connection.").response()
        if request.method == "OPTIONS":
            return Response(status_code=200, headers={"Allow": "OPTIONS,GET,HEAD,POST,DELETE"})
        try:
            return self._dispatch(table, request, body)
        except PostgrestError as exc:
            return exc.response()

    def _dispatch(self, table: str, request: Request, body: Any) -> Response:
        if table not in self.tables:
            raise PostgrestError(
                404, "PGRST205", f"Could not find the table '{self.schema}.{table}' in the schema cache"
            )
        params = request.query_params
        filters = [(k, v) for k, v in params.multi_items() if k not in _RESERVED]
        for column, _ in filters:
            self._check_column(table, column)
        prefer = {p.strip() for p in request.headers.get("prefer", "").split(",") if p.strip()}
        if request.method in ("GET", "HEAD"):
            rows = self._select(table, filters, params.get("order"), params.get("limit"), params.get("offset"))
            projected = self._project(table, rows, params.get("select", "*"))
            end = f"0-{len(projected) - 1}" if projected else "*"
            headers = {"Content-Range": f"{end}/*"}
            if request.method == "HEAD":
                return Response(status_code=200, headers=headers)
            return JSONResponse(projected, headers=headers)
        if request.method == "POST":
            written = self._write(table, body, prefer, params.get("on_conflict"))
            return self._returning(table, written, prefer, params.get("select", "*"), 201)
        # DELETE
        if not filters:
            raise PostgrestError(400, "21000", "DELETE requires a WHERE clause")
        doomed = self._select(table, filters, None, None, None)
        for row in doomed:
            del self.tables[table][row[self.primary_key]]
        return self._returning(table, doomed, prefer, params.get("select", "*"), 200)

    def _check_column(self, table: str, column: str) -> None:
        if column not in self.columns[table]:
            raise PostgrestError(400, "42703", f"column {table}.{column} does not exist")

    def _select(
        self, table: str, filters: list[tuple[str, str]], order: str | None, limit: str | None, offset: str | None
    ) -> list[dict[str, Any]]:
        rows = [r for r in self.tables[table].values() if all(_matches(r, c, e) for c, e in filters)]
        if order:
            for term in order.split(","):
                self._check_column(table, term.split(".")[0])
            rows = _sort(rows, order)
        start = int(offset or 0)
        return rows[start : start + int(limit)] if limit is not None else rows[start:]

    def _project(self, table: str, rows: list[dict[str, Any]], select: str) -> list[dict[str, Any]]:
        if select == "*":
            return [dict(r) for r in rows]
        wanted = [c.strip('"') for c in select.split(",")]
        for column in wanted:
            self._check_column(table, column)
        return [{c: r.get(c) for c in wanted} for r in rows]

    def _write(self, table: str, body: Any, prefer: set[str], on_conflict: str | None) -> list[dict[str, Any]]:
        incoming = body if isinstance(body, list) else [body]
        if not incoming or not all(isinstance(r, dict) for r in incoming):
            raise PostgrestError(400, "PGRST102", "Empty or invalid json")
        conflict = on_conflict or self.primary_key
        if conflict != self.primary_key:
            raise PostgrestError(
                400, "42P10", "there is no unique or exclusion constraint matching the ON CONFLICT specification"
            )
        store = self.tables[table]
        written = []
        for row in incoming:
            for column in row:
                if column not in self.columns[table]:
                    raise PostgrestError(
                        400, "PGRST204", f"Could not find the '{column}' column of '{table}' in the schema cache"
                    )
            key = row.get(self.primary_key)
            existing = store.get(key)
            if existing is not None:
                if "resolution=ignore-duplicates" in prefer:
                    continue
                if "resolution=merge-duplicates" not in prefer:
                    raise PostgrestError(409, "23505", f'duplicate key value violates unique constraint "{table}_pkey"')
                existing.update(row)
                written.append(existing)
                continue
            new = {c: None for c in self.columns[table]} | row
            if self.serial_column and new.get(self.serial_column) is None:
                self._serial += 1
                new[self.serial_column] = self._serial
            store[key] = new
            written.append(new)
        return written

    def _returning(
        self, table: str, rows: list[dict[str, Any]], prefer: set[str], select: str, status: int
    ) -> Response:
        if "return=representation" in prefer:
            return JSONResponse(self._project(table, rows, select), status_code=status)
        return Response(status_code=201 if status == 201 else 204)

