"""A job's results as CSV (`GET /jobs/{job_id}/results.csv`): one line per provider, best offer first.

Built from the same job document `GET /jobs/{job_id}` answers, so the two never disagree. Provider names,
terms and notes are untrusted text: a cell that a spreadsheet would run as a formula (it starts with `=`,
`+`, `-`, `@`, a tab or a carriage return) gets a leading apostrophe, the usual defence against CSV injection.
"""

from __future__ import annotations

import csv
import io
from typing import Any

COLUMNS = (
    "rank", "provider_id", "service_provider", "phone_number", "call_status", "outcome", "attempts",
    "initial_quote", "negotiated_price", "saving", "price_type", "conditions", "duration_s", "answered_by",
    "end_reason", "failure_reason", "ended_at", "cost", "best",
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
TEXT_COLUMNS = frozenset({"service_provider", "conditions", "end_reason", "failure_reason", "answered_by",
                          "price_type"})


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    if column in TEXT_COLUMNS and text.startswith(FORMULA_START):
        return "'" + text
    return text


def results_csv(doc: dict[str, Any]) -> str:
    """`doc` is a `job_doc`. Lines follow its offer ranking (agreed offers cheapest first, then the rest)."""
    by_id = {p["id"]: p for p in doc["providers"]}
    best_id = (doc.get("best_offer") or {}).get("provider_id")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for rank, offer in enumerate(doc["offers"], start=1):
        p = by_id[offer["provider_id"]]
        values = {**p, "rank": rank, "provider_id": p["id"], "saving": offer["saving"],
                  "best": p["id"] == best_id}
        writer.writerow([_cell(c, values.get(c)) for c in COLUMNS])
    return out.getvalue()
