"""Per-call context the dispatcher writes before dialing and any media-gateway replica reads.

Kept in the JetStream key-value bucket `subjects.KV_CALLS` under `ctx.<call_id>`, so a gateway replica
that did not dial the call can still take its webhooks and media stream. The `token` is single-use: the
gateway burns it (compare-and-set on the entry's revision) when it accepts the media stream.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from .events import utcnow
from .scope import Quote


class BookingBrief(msgspec.Struct, kw_only=True, frozen=True):
    """A booking call: confirm this price and an appointment inside one of these windows (empty: any time)."""

    price: float
    windows: list[str] = msgspec.field(default_factory=list)


class CallContext(msgspec.Struct, kw_only=True):
    call_id: str
    job_id: str
    provider_id: str
    attempt: int
    service_provider: str
    phone_number: str
    problem: str
    zip_code: str
    max_price: float
    context_answers: str = ""
    token: str
    call_sid: str | None = None  # set once Twilio accepted the dial
    # "inbound": the provider called us back; `callback_context` then holds what was said before and the quote.
    direction: str = "outbound"
    callback_context: str = ""
    # The homeowner did not answer a transfer: the stream that follows only closes the call politely.
    transfer_failed: bool = False
    token_used: bool = False
    created_at: datetime = msgspec.field(default_factory=utcnow)
    # The negotiation this call continues (market strategy; see docs/negotiation.md): its round (2+: a callback),
    # the real competing quote it carries, what this provider stated and what we offered it in earlier calls, and
    # the competing all-in prices it has already been told. Together with the call's own record_quote calls,
    # these are the gateway's `OfferFacts`.
    round: int = 1
    competitor: Quote | None = None
    their_prices: list[float] = msgspec.field(default_factory=list)
    our_offers: list[float] = msgspec.field(default_factory=list)
    cited: list[float] = msgspec.field(default_factory=list)
    booking: BookingBrief | None = None  # set on a booking call (POST /jobs/{id}/book): no negotiating


def ctx_key(call_id: str) -> str:
    return f"ctx.{call_id}"


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(CallContext)


def encode_context(ctx: CallContext) -> bytes:
    return _enc.encode(ctx)


def decode_context(data: bytes) -> CallContext:
    return _dec.decode(data)
