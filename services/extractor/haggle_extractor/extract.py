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
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
from haggle_contracts import events as ev
from haggle_contracts import ids

from haggle_extractor.offline import Extraction, Transcript, TranscriptError, extract_offline
from haggle_extractor.xai_chat import DEFAULT_BASE_URL, DEFAULT_MODEL, ExtractionError, extract_with_xai

logger = logging.getLogger(__name__)

__all__ = ["Extraction", "ExtractionError", "TranscriptError", "describe", "extract", "price_extracted", "read_call"]


async def extract(
    transcript: Transcript,
    *,
    api_key: str | None,
    base_url: str = DEFAULT_BASE_URL,
    model: str = DEFAULT_MODEL,
    quote_hints: Sequence[ev.QuoteRecorded | Mapping[str, Any] | Any] | None = None,
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


async def read_call(
    mine: Sequence[ev.Event],
    reason: str,
    *,
    api_key: str | None,
    base_url: str = DEFAULT_BASE_URL,
    model: str = DEFAULT_MODEL,
    timeout_s: float = 20.0,
    retries: int = 2,
) -> Extraction:
    """What one call came to, from its own events on the log and the reason it ended.

    A voicemail, a phone menu that never let the agent through and a call in which the provider said nothing
    are known without reading anything; every other call is read by `extract`, with the voice model's
    record_quote calls as hints. The latest revision of each utterance is the one read.
    """
    latest: dict[str, ev.UtteranceTranscribed] = {}
    for e in mine:
        if isinstance(e, ev.UtteranceTranscribed):
            latest[e.utterance_id] = e
    lines = sorted(latest.values(), key=lambda u: u.seq)
    heard = [u.role is ev.Role.USER for u in lines]
    machine = any(isinstance(e, ev.MachineDetected) and e.is_machine for e in mine)
    if reason == "voicemail" or (machine and not any(heard[1:])):
        return _unread(ev.Outcome.VOICEMAIL, "amd")
    if reason == "ivr_stuck":  # the gateway gave up on a phone menu; its numbers are not prices
        return _unread(ev.Outcome.IVR_STUCK, "none", "the phone menu repeated after 0 was pressed")
    if not any(heard):
        return _unread(ev.Outcome.NO_AGREEMENT, "none", f"nothing was heard from the provider (call ended: {reason})")
    return await extract(
        lines, api_key=api_key, base_url=base_url, model=model, timeout_s=timeout_s, retries=retries,
        quote_hints=[q for q in mine if isinstance(q, ev.QuoteRecorded)],
    )


def price_extracted(x: Extraction, *, job_id: str, provider_id: str, attempt: int, call_sid: str) -> ev.PriceExtracted:
    """The one way a call's result becomes its PriceExtracted: a price only with a deal, AGREED only with a price."""
    outcome = x.outcome
    if x.agreed and x.price is not None:
        outcome = ev.Outcome.AGREED
    elif outcome is ev.Outcome.AGREED:
        outcome = ev.Outcome.NO_AGREEMENT
    agreed = outcome is ev.Outcome.AGREED
    return ev.PriceExtracted(
        event_id=ids.price_event_id(call_sid), job_id=job_id, provider_id=provider_id, attempt=attempt,
        call_sid=call_sid, outcome=outcome, agreed=agreed, price=x.price if agreed else None,
        initial_quote=x.initial_quote, price_type=x.price_type, conditions=x.conditions, evidence=list(x.evidence),
        method=x.method, disagreement=x.disagreement,
    )


def _unread(outcome: ev.Outcome, method: str, *evidence: str) -> Extraction:
    return Extraction(agreed=False, price=None, initial_quote=None, price_type=ev.PriceType.UNKNOWN, conditions="",
                      evidence=list(evidence), outcome=outcome, method=method)


def describe(x: Extraction) -> str:
    """A short human reading of a result: "agreed at $150 (hourly)", "no agreement (quote $175)"."""
    if x.agreed and x.price is not None:
        return f"agreed at ${x.price:g} ({x.price_type.value})"
    head = "declined" if x.outcome is ev.Outcome.DECLINED else "no agreement"
    return f"{head} (quote ${x.initial_quote:g})" if x.initial_quote is not None else head


def _disagree(a: Extraction, b: Extraction) -> bool:
    if a.agreed != b.agreed:
        return True
    if a.price is None or b.price is None:
        return a.price is not b.price
    return abs(a.price - b.price) > 0.005


@dataclass(frozen=True, slots=True)
class _Hint:
    price: float | None
    price_type: ev.PriceType
    conditions: str
    agreed: bool | None


def _valid_hints(hints: Sequence[Any] | None) -> list[_Hint]:
    """Keep the well-formed record_quote calls; a bad one is logged and ignored (it is only a hint).

    A QuoteRecorded was typed when it was decoded. A mapping (a test's, or a caller that has not moved to the
    events yet) is checked here, the one place a hint's price type is read from text.
    """
    out: list[_Hint] = []
    for n, hint in enumerate(hints or []):
        if isinstance(hint, ev.QuoteRecorded):
            price: object = hint.price
            kind, conditions, agreed = hint.price_type, hint.conditions, hint.agreed
        elif isinstance(hint, Mapping):
            price = hint.get("price")
            kind = hint.get("price_type")
            kind = ev.PriceType(kind) if kind in ev.PriceType._value2member_map_ else ev.PriceType.UNKNOWN
            conditions = hint.get("conditions") if isinstance(hint.get("conditions"), str) else ""
            agreed = hint.get("agreed") if isinstance(hint.get("agreed"), bool) else None
        else:
            price = "not a hint"
        if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)
                                  or not math.isfinite(price) or price < 0):
            logger.warning("ignoring malformed quote hint %d: %r", n, hint)
            continue
        out.append(_Hint(float(price) if price is not None else None, kind, conditions, agreed))
    return out


def _with_hints(result: Extraction, hints: list[_Hint]) -> Extraction:
    """Fill gaps from a hint about the same price; note a hint that claims a different deal."""
    if not hints:
        return result
    changes: dict[str, Any] = {}
    price = result.price if result.agreed else result.initial_quote
    same = [h for h in hints if price is not None and h.price is not None and abs(h.price - price) <= 0.005]
    soft_types = (ev.PriceType.UNKNOWN, ev.PriceType.FLAT)
    if same:
        hint = same[-1]
        # The offline reader calls any bare number "flat"; xAI's "flat" is a reading of its own and stays.
        soft = soft_types if result.method.startswith("offline") else (ev.PriceType.UNKNOWN,)
        if result.price_type in soft and hint.price_type not in soft_types:
            changes["price_type"] = hint.price_type
        if not result.conditions and hint.conditions:
            changes["conditions"] = hint.conditions
    claimed = [h for h in hints if h.agreed and h.price is not None]
    if claimed and result.disagreement is None:
        last = claimed[-1]
        assert last.price is not None
        if not result.agreed or result.price is None or abs(last.price - result.price) > 0.005:
            changes["disagreement"] = (
                f"record_quote hint: agreed at ${last.price:g}; transcript reading: {describe(result)}"
            )
    return msgspec.structs.replace(result, **changes) if changes else result
