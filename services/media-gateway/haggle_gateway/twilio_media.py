"""Twilio Media Streams messages (bidirectional `<Connect><Stream>`): typed parsing and building.

One protocol, one file. Inbound frames are JSON text: `connected`, `start`, `media`, `mark`, `dtmf`, `stop`.
Twilio sends numbers as JSON strings (`sequenceNumber`, `chunk`, `timestamp`), so those stay `str` on the
wire structs and typed accessors convert them. Anything that is not a well-formed message raises
`MediaMessageError` with a reason fit for a log line; an event name this build does not know parses to
`UnknownMessage` so a new Twilio event never breaks a live call.

Outbound: `media` (base64 raw mu-law 8 kHz, no headers), `mark` and `clear`, keyed by `streamSid` (camelCase:
`stream_sid` is rejected by Twilio with error 31951).
"""

from __future__ import annotations

import binascii
from functools import lru_cache

import msgspec


class MediaMessageError(ValueError):
    """A frame that is not a valid Media Streams message."""


class _Msg(msgspec.Struct, kw_only=True, frozen=True):
    pass


class Connected(_Msg, kw_only=True, frozen=True):
    event: str = "connected"
    protocol: str = ""
    version: str = ""


class MediaFormat(msgspec.Struct, kw_only=True, frozen=True):
    encoding: str = "audio/x-mulaw"
    sampleRate: int = 8000
    channels: int = 1


class StartInfo(msgspec.Struct, kw_only=True, frozen=True):
    streamSid: str
    callSid: str
    accountSid: str = ""
    tracks: list[str] = msgspec.field(default_factory=list)
    customParameters: dict[str, str] = msgspec.field(default_factory=dict)
    mediaFormat: MediaFormat = msgspec.field(default_factory=MediaFormat)


class Start(_Msg, kw_only=True, frozen=True):
    event: str = "start"
    sequenceNumber: str = "0"
    streamSid: str = ""
    start: StartInfo

    @property
    def stream_sid(self) -> str:
        return self.start.streamSid or self.streamSid

    @property
    def call_sid(self) -> str:
        return self.start.callSid

    @property
    def parameters(self) -> dict[str, str]:
        return self.start.customParameters


class MediaPayload(msgspec.Struct, kw_only=True, frozen=True):
    payload: str
    track: str = "inbound"
    chunk: str = "0"
    timestamp: str = "0"


class Media(_Msg, kw_only=True, frozen=True):
    event: str = "media"
    sequenceNumber: str = "0"
    streamSid: str = ""
    media: MediaPayload

    @property
    def timestamp_ms(self) -> int:
        """Presentation time from the start of the stream (sent as a string)."""
        return _int(self.media.timestamp, "media.timestamp")

    @property
    def sequence(self) -> int:
        return _int(self.sequenceNumber, "sequenceNumber")

    def audio(self) -> bytes:
        """The raw mu-law bytes (only decoded when a caller needs samples; pcmu passes the base64 through)."""
        try:
            return binascii.a2b_base64(self.media.payload, strict_mode=True)  # b64decode(validate=True), no regex
        except (binascii.Error, ValueError) as exc:
            raise MediaMessageError(f"media.payload is not base64: {exc}") from exc


class MarkName(msgspec.Struct, kw_only=True, frozen=True):
    name: str


class Mark(_Msg, kw_only=True, frozen=True):
    event: str = "mark"
    sequenceNumber: str = "0"
    streamSid: str = ""
    mark: MarkName


class DtmfInfo(msgspec.Struct, kw_only=True, frozen=True):
    digit: str
    track: str = "inbound_track"


class Dtmf(_Msg, kw_only=True, frozen=True):
    event: str = "dtmf"
    sequenceNumber: str = "0"
    streamSid: str = ""
    dtmf: DtmfInfo


class StopInfo(msgspec.Struct, kw_only=True, frozen=True):
    accountSid: str = ""
    callSid: str = ""


class Stop(_Msg, kw_only=True, frozen=True):
    event: str = "stop"
    sequenceNumber: str = "0"
    streamSid: str = ""
    stop: StopInfo = msgspec.field(default_factory=StopInfo)


class UnknownMessage(_Msg, kw_only=True, frozen=True):
    """A well-formed frame whose `event` this build does not handle (logged and ignored by the bridge)."""

    event: str


TwilioMessage = Connected | Start | Media | Mark | Dtmf | Stop | UnknownMessage

_TYPES: dict[str, type[_Msg]] = {
    "connected": Connected,
    "start": Start,
    "media": Media,
    "mark": Mark,
    "dtmf": Dtmf,
    "stop": Stop,
}
_DECODERS = {name: msgspec.json.Decoder(cls) for name, cls in _TYPES.items()}


class _Head(msgspec.Struct):
    event: str


_head_decoder = msgspec.json.Decoder(_Head)


_MEDIA_DECODER = _DECODERS["media"]


def parse_message(data: str | bytes) -> TwilioMessage:
    """Parse one text frame. Raises MediaMessageError naming what is wrong."""
    if data[:16] == '{"event":"media"':
        # Five frames in six, and Twilio writes `event` first: one decode straight into the Struct. Anything
        # unexpected takes the general path below (which names the error).
        try:
            return _MEDIA_DECODER.decode(data)  # type: ignore[no-any-return]
        except msgspec.DecodeError:
            pass
    try:
        head = _head_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise MediaMessageError(f"not a Media Streams message: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise MediaMessageError(f"frame is not JSON: {exc}") from exc
    decoder = _DECODERS.get(head.event)
    if decoder is None:
        return UnknownMessage(event=head.event[:40])
    try:
        return decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise MediaMessageError(f"invalid {head.event!r} message: {exc}") from exc


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise MediaMessageError(f"{name} is not an integer: {value[:20]!r}") from exc


_encoder = msgspec.json.Encoder()


@lru_cache(maxsize=4096)
def _sid(stream_sid: str) -> str:
    """The stream sid as a JSON string literal (once per stream, not once per frame)."""
    return _encoder.encode(stream_sid).decode()


# Outbound messages are assembled from literals: base64 needs no JSON escaping, and the sid and mark names are
# encoded by msgspec, so the result is the same JSON an encoder would produce at a fraction of the cost.


def media_message(stream_sid: str, audio: bytes) -> str:
    """Audio to play on the call: raw mu-law 8 kHz bytes, any length, no WAV/AU header."""
    return ('{"event":"media","streamSid":' + _sid(stream_sid) + ',"media":{"payload":"'
            + binascii.b2a_base64(audio, newline=False).decode("ascii") + '"}}')


def mark_message(stream_sid: str, name: str) -> str:
    """A mark Twilio echoes once the audio sent before it has played (or was cleared)."""
    return ('{"event":"mark","streamSid":' + _sid(stream_sid) + ',"mark":{"name":'
            + _encoder.encode(name).decode() + "}}")


def clear_message(stream_sid: str) -> str:
    """Drop everything Twilio has buffered for playback; pending marks come back at once."""
    return '{"event":"clear","streamSid":' + _sid(stream_sid) + "}"


class FrameGuard:
    """Per-stream input limits against a hostile or broken peer: a maximum frame size and a token-bucket message rate.

    The burst allowance (two seconds' worth) absorbs the flood of mark echoes a `clear` triggers.
    """

    def __init__(self, max_frame_bytes: int, max_messages_per_s: float, *, burst_s: float = 2.0) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.rate = max_messages_per_s
        self.capacity = max_messages_per_s * burst_s
        self._tokens = self.capacity
        self._last: float | None = None

    def check_size(self, size: int) -> str | None:
        """For frames that do not count against the rate (the echoes of our own marks)."""
        return "frame_too_large" if size > self.max_frame_bytes else None

    def check(self, size: int, now: float) -> str | None:
        """None if the frame is acceptable, else the violation ("frame_too_large" | "rate_limited")."""
        if size > self.max_frame_bytes:
            return "frame_too_large"
        if self._last is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return "rate_limited"
        self._tokens -= 1.0
        return None
