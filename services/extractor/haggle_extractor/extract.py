"""One entry point for post-call extraction: xAI when there is a key, the offline reader always.

The offline reader runs on every call (it is cheap and deterministic): without a key it is the answer, when
xAI fails it is the fallback (`method="offline(fallback: <why>)"`), and when both answer it is the second
opinion whose disagreement on `agreed` or `price` is recorded for a human to look at. The xAI answer stays
primary. `quote_hints` (the voice model's `record_quote` tool calls) are evidence, not truth: they only fill
a price type or conditions the transcript reading left empty, and a conflicting hint is noted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import msgspec

from haggle_extractor.offline import Extraction, TranscriptError, extract_offline
from haggle_extractor.xai_chat import DEFAULT_BASE_URL, DEFAULT_MODEL, ExtractionError, extract_with_xai

logger = logging.getLogger(__name__)

__all__ = ["Extraction", "ExtractionError", "TranscriptError", "describe", "extract"]

_PRICE_TYPES = ("flat", "hourly", "visit_fee", "unknown")


async def extract(
    transcript: list[dict],
    *,
    api_key: str | None,
    base_url: str = DEFAULT_BASE_URL,
    model: str = DEFAULT_MODEL,
    quote_hints: list[dict] | None = None,
    client: httpx.AsyncClient | None = None,
    timeout_s: float = 20.0,
    retries: int = 2,
    backoff_s: float = 0.5,
) -> Extraction:
    """The call's result. Raises TranscriptError for a malformed transcript, nothing else."""
    offline = extract_offline(transcript)
    hints = _valid_hints(quote_hints)
    if not api_key:
        return _with_hints(offline, hints)
    try:
        primary = await extract_with_xai(
            transcript, api_key=api_key, base_url=base_url, model=model, timeout_s=timeout_s, retries=retries,
            client=client, backoff_s=backoff_s,
        )
    except ExtractionError as exc:
        logger.warning("xAI extraction failed, using the offline reading: %s", exc.reason)
        fallback = msgspec.structs.replace(offline, method=f"offline(fallback: {exc.reason})")
        return _with_hints(fallback, hints)
    if _disagree(primary, offline):
        note = f"xai: {describe(primary)}; offline: {describe(offline)}"
        primary = msgspec.structs.replace(primary, disagreement=note)
        logger.info("extractors disagree: %s", primary.disagreement)
    return _with_hints(primary, hints)


def describe(x: Extraction) -> str:
    """A short human reading of a result: "agreed at $150 (hourly)", "no agreement (quote $175)"."""
    if x.agreed and x.price is not None:
        return f"agreed at ${x.price:g} ({x.price_type})"
    head = "declined" if x.outcome == "declined" else "no agreement"
    return f"{head} (quote ${x.initial_quote:g})" if x.initial_quote is not None else head


def _disagree(a: Extraction, b: Extraction) -> bool:
    if a.agreed != b.agreed:
        return True
    if a.price is None or b.price is None:
        return a.price is not b.price
    return abs(a.price - b.price) > 0.005


def _valid_hints(hints: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Keep the well-formed record_quote calls; a bad one is logged and ignored (it is only a hint)."""
    out: list[dict[str, Any]] = []
    for n, hint in enumerate(hints or []):
        price = hint.get("price") if isinstance(hint, Mapping) else None
        if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)
                                  or not math.isfinite(price) or price < 0):
            price = "bad"
        if not isinstance(hint, Mapping) or price == "bad":
            logger.warning("ignoring malformed quote hint %d: %r", n, hint)
            continue
        out.append({
            "price": float(price) if price is not None else None,
            "price_type": hint.get("price_type") if hint.get("price_type") in _PRICE_TYPES else "unknown",
            "conditions": hint.get("conditions") if isinstance(hint.get("conditions"), str) else "",
            "agreed": hint.get("agreed") if isinstance(hint.get("agreed"), bool) else None,
        })
    return out


def _with_hints(result: Extraction, hints: list[dict[str, Any]]) -> Extraction:
    """Fill gaps from a hint about the same price; note a hint that claims a different deal."""
    if not hints:
        return result
    changes: dict[str, Any] = {}
    price = result.price if result.agreed else result.initial_quote
    same = [h for h in hints if price is not None and h["price"] is not None and abs(h["price"] - price) <= 0.005]
    if same:
        hint = same[-1]
        # The offline reader calls any bare number "flat"; xAI's "flat" is a reading of its own and stays.
        soft = ("unknown", "flat") if result.method.startswith("offline") else ("unknown",)
        if result.price_type in soft and hint["price_type"] not in ("unknown", "flat"):
            changes["price_type"] = hint["price_type"]
        if not result.conditions and hint["conditions"]:
            changes["conditions"] = hint["conditions"]
    claimed = [h for h in hints if h["agreed"] and h["price"] is not None]
    if claimed and result.disagreement is None:
        last = claimed[-1]
        if not result.agreed or result.price is None or abs(last["price"] - result.price) > 0.005:
            changes["disagreement"] = (
                f"record_quote hint: agreed at ${last['price']:g}; transcript reading: {describe(result)}"
            )
    return msgspec.structs.replace(result, **changes) if changes else result
