"""Wire encoding of events: JSON via msgspec, with errors a consumer can dead-letter."""

from __future__ import annotations

import msgspec

from . import events as ev

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ev.AnyEvent)
_header_decoder = msgspec.json.Decoder(dict)


class EventDecodeError(ValueError):
    """The bytes are not an event this build understands. The message says why, for the dead letter."""


def encode(event: ev.Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> ev.AnyEvent:
    """Decode and validate one event; unknown types, unknown versions and bad fields raise EventDecodeError."""
    try:
        head = _header_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise EventDecodeError(f"not a JSON object: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    kind = head.get("type")
    if not isinstance(kind, str) or kind not in ev.CURRENT_VERSION:
        raise EventDecodeError(f"unknown event type {kind!r}")
    version = head.get("v", 1)
    if not isinstance(version, int) or version > ev.CURRENT_VERSION[kind] or version < 1:
        raise EventDecodeError(f"unsupported version {version!r} of {kind}")
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise EventDecodeError(f"invalid {kind}: {exc}") from exc
