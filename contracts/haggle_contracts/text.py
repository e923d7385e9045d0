"""What text Haggle accepts in an event or an API body: one rule for every edge.

The API, every consumer's decode path and every store must agree, or a value the API accepted can be
refused by a store later (PostgreSQL cannot hold NUL in a text column) and stall the projection. So:

- no control characters except newline and tab (C0, DEL and C1), and no lone UTF-16 surrogates
  (JSON can spell them; UTF-8 text columns cannot hold them);
- each field has a length cap (`CAPS`, in characters); a field not listed there gets `DEFAULT_CAP`.

`problem(value, field)` checks one string (the API models use it); `event_problem(event)` walks an
event and names the first offending field (the consumers dead-letter with that reason).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)

_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

DEFAULT_CAP = 4000
CAPS: dict[str, int] = {
    "service_provider": 200,
    "problem": 2000,
    "zip_code": 20,
    "context_answers": 20_000,
    "timezone": 64,
    "text": 20_000,  # one utterance
    "conditions": 4000,
    "evidence": 4000,  # each quote
    "reason": 2000,
    "source": 200,
    "disagreement": 4000,
    "method": 500,
}


def cap(field: str) -> int:
    return CAPS.get(field, DEFAULT_CAP)


def problem(value: str, field: str) -> str | None:
    """Why `value` is not acceptable as `field`, or None when it is."""
    found = _FORBIDDEN.search(value)
    if found is not None:
        return f"contains control character U+{ord(found.group()):04X} (only newline and tab are allowed)"
    limit = cap(field)
    if len(value) > limit:
        return f"is {len(value)} characters long; the limit is {limit}"
    return None


def check(value: str, field: str) -> str:
    """`value` unchanged, or ValueError with the reason (a pydantic validator's shape)."""
    reason = problem(value, field)
    if reason is not None:
        raise ValueError(reason)
    return value


def scrub(value: str) -> str:
    """`value` with forbidden characters replaced by U+FFFD and cut to DEFAULT_CAP: for showing a refused value."""
    return _FORBIDDEN.sub("\ufffd", value)[:DEFAULT_CAP]


def fit(value: str, field: str) -> str:
    """`value` made acceptable as `field`: forbidden characters become U+FFFD, the rest is cut at the cap."""
    return _FORBIDDEN.sub("\ufffd", value)[: cap(field)]


def fitted_event(event: S) -> S:
    """A copy of `event` with every string made acceptable (`fit`): for text our own producers got from outside
    (a speech model's transcript, a quote it extracted), which must not make every consumer dead-letter the event."""
    return msgspec.convert(_fit(msgspec.to_builtins(event), ""), type(event))


def _fit(value: Any, field: str) -> Any:
    if isinstance(value, str):
        return fit(value, field)
    if isinstance(value, dict):
        return {k: _fit(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_fit(v, field) for v in value]
    return value


def event_problem(event: msgspec.Struct) -> str | None:
    """The first string field of `event` (nested structs and lists included) that breaks the rule, as a reason."""
    return _walk(event, "", "")


def _walk(value: Any, path: str, field: str) -> str | None:
    if isinstance(value, str):
        reason = problem(value, field)
        return f"{path or field} {reason}" if reason else None
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            found = _walk(getattr(value, name), f"{path}.{name}" if path else name, name)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _walk(item, f"{path}[{i}]", field)
            if found:
                return found
    return None
