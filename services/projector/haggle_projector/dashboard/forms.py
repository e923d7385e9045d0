"""The start-a-job form: pasted provider lines or an uploaded CSV, turned into the API's `JobIn`.

Validation is the API's own (`JobIn`/`ProviderIn`); this module only parses the human formats and words
each problem so the operator can find it (which line, which field, what is wrong).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..api import JobIn, ProviderIn

MAX_CSV_BYTES = 1024 * 1024
CSV_REQUIRED = ("service_provider", "phone_number")
CSV_OPTIONAL = ("zip_code", "max_price")
FIELD_LABELS = {
    "service_provider": "name",
    "phone_number": "phone number",
    "zip_code": "ZIP code",
    "max_price": "target price",
    "problem": "problem",
    "context_answers": "details",
    "providers": "providers",
}


class FormError(ValueError):
    """The form cannot start a job; `errors` are the operator-facing reasons."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class ParsedProviders:
    providers: list[ProviderIn] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _pydantic_reasons(exc: ValidationError) -> list[str]:
    reasons = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"] if not isinstance(part, int)]
        label = FIELD_LABELS.get(loc[-1], loc[-1]) if loc else "value"
        msg = str(err["msg"]).removeprefix("Value error, ")
        reasons.append(f"{label} {msg}" if err["type"] == "value_error" else f"{label}: {msg}")
    return reasons


def _price(raw: str) -> tuple[float | None, str | None]:
    """A price as typed ("$1,200.50" is fine): (value, None), (None, None) when blank, or (None, reason)."""
    cleaned = raw.strip().replace("$", "").replace(",", "")
    if not cleaned:
        return None, None
    try:
        value = float(cleaned)
    except ValueError:
        return None, f"target price {raw.strip()!r} is not a number"
    if not value > 0:
        return None, "target price must be more than 0"
    return value, None


def _provider(values: dict[str, Any], where: str, out: ParsedProviders) -> None:
    try:
        out.providers.append(ProviderIn(**values))
    except ValidationError as exc:
        name = values.get("service_provider") or "?"
        out.errors.extend(f"{where} ({name}): {reason}" for reason in _pydantic_reasons(exc))


def parse_lines(text: str) -> ParsedProviders:
    """`Name, +1 phone` per line (tab also separates); a first line `service_provider,...` means CSV."""
    stripped = text.strip()
    if not stripped:
        return ParsedProviders()
    if stripped.lower().startswith("service_provider"):
        return parse_csv(stripped, source="Pasted CSV")
    out = ParsedProviders()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # A tab wins (pasted from a spreadsheet); else the last comma, as names may contain commas.
        parts = line.split("\t", 1) if "\t" in line else line.rsplit(",", 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            out.errors.append(f"Line {number}: expected 'Name, +1 phone number' (got {line[:80]!r})")
            continue
        _provider({"service_provider": parts[0].strip(), "phone_number": parts[1].strip()}, f"Line {number}", out)
    return out


def parse_csv(text: str, *, source: str = "CSV") -> ParsedProviders:
    """A CSV with header service_provider,phone_number[,zip_code,max_price]."""
    out = ParsedProviders()
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        out.errors.append(f"{source}: the file is empty")
        return out
    except csv.Error as exc:
        out.errors.append(f"{source}: not a readable CSV ({exc})")
        return out
    missing = [c for c in CSV_REQUIRED if c not in header]
    unknown = [c for c in header if c not in CSV_REQUIRED + CSV_OPTIONAL]
    if missing or unknown:
        expected = ",".join(CSV_REQUIRED) + "[," + ",".join(CSV_OPTIONAL) + "]"
        problem = f"missing column(s) {', '.join(missing)}" if missing else f"unknown column(s) {', '.join(unknown)}"
        out.errors.append(f"{source}: {problem}; the header must be {expected}")
        return out
    try:
        for row in reader:
            where = f"{source} line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                out.errors.append(f"{where}: {len(row)} values for {len(header)} columns")
                continue
            values: dict[str, Any] = {k: v.strip() for k, v in zip(header, row, strict=True) if v.strip()}
            if "max_price" in values:
                price, error = _price(values["max_price"])
                if error:
                    out.errors.append(f"{where}: {error}")
                    continue
                values["max_price"] = price
            _provider(values, where, out)
    except csv.Error as exc:
        out.errors.append(f"{source} line {reader.line_num}: not a readable CSV ({exc})")
    return out


def decode_upload(data: bytes) -> str:
    if len(data) > MAX_CSV_BYTES:
        raise FormError([f"The CSV file is larger than {MAX_CSV_BYTES // 1024} KB"])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FormError(["The CSV file is not UTF-8 text"]) from None


def job_from_form(values: dict[str, str], csv_text: str | None = None) -> JobIn:
    """The `JobIn` the form describes; raises FormError listing every problem found."""
    # Browsers send a textarea's line breaks as CRLF; the text rule allows only newline and tab.
    values = {k: v.replace("\r\n", "\n").replace("\r", "\n") for k, v in values.items()}
    errors: list[str] = []
    problem = values.get("problem", "").strip()
    zip_code = values.get("zip_code", "").strip()
    if not problem:
        errors.append("Problem: describe what needs fixing")
    if not zip_code:
        errors.append("ZIP code: required")
    max_price, price_error = _price(values.get("max_price", ""))
    if price_error:
        errors.append(price_error[0].upper() + price_error[1:])
    elif max_price is None:
        errors.append("Target price: required")
    parsed = parse_lines(values.get("providers", ""))
    if csv_text is not None:
        from_csv = parse_csv(csv_text)
        parsed.providers.extend(from_csv.providers)
        parsed.errors.extend(from_csv.errors)
    errors.extend(parsed.errors)
    if not parsed.providers and not parsed.errors:
        errors.append("Providers: paste at least one 'Name, +1 phone' line or upload a CSV")
    if errors:
        raise FormError(errors)
    try:
        return JobIn(problem=problem, zip_code=zip_code, max_price=max_price,
                     context_answers=values.get("context_answers", "").strip(), providers=parsed.providers)
    except ValidationError as exc:
        raise FormError([reason[0].upper() + reason[1:] for reason in _pydantic_reasons(exc)]) from None
