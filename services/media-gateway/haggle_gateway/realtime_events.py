"""xAI Grok realtime events: building client events and parsing server events (OpenAI-Realtime-style JSON).

Why typed parsing with a catch-all: the API changed during 2025-2026 (docs/xai-realtime.md), so parsing must
accept both spellings where they differ (`response.output_audio.delta` / beta `response.audio.delta`,
`session.created` / older `conversation.created`), ignore fields it does not use, and turn event types it
does not know into `UnknownEvent` instead of failing a live call. Client events are plain dicts built by
small functions so their shape (xAI: `voice` and `turn_detection` at the top level of `session`, audio
formats nested, flat function tools) lives in one place.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from .settings import GatewaySettings

# Benign errors seen from Grok (docs/xai-realtime.md, "Errors"): log and continue.
BENIGN_ERROR_PREFIXES = (
    "Conversation already has an active response in progress",
    "Cancellation failed: no active response found",
)


# ---------------------------------------------------------------------------------------------- client events


def audio_format(settings: GatewaySettings) -> dict[str, Any]:
    """`audio/pcmu` passes Twilio's mu-law through untouched; pcm24k is PCM16 LE at 24 kHz."""
    if settings.audio_format == "pcmu":
        return {"type": "audio/pcmu"}  # no `rate`: as xAI's own Twilio example sends it
    return {"type": "audio/pcm", "rate": 24000}


def session_config(settings: GatewaySettings, instructions: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    fmt = audio_format(settings)
    audio_input: dict[str, Any] = {"format": fmt}
    if settings.transcription_model:
        audio_input["transcription"] = {"model": settings.transcription_model}
    session: dict[str, Any] = {
        "instructions": instructions,
        "voice": settings.voice,
        "turn_detection": {
            "type": "server_vad",
            "threshold": settings.vad_threshold,
            "prefix_padding_ms": settings.vad_prefix_padding_ms,
            "silence_duration_ms": settings.vad_silence_ms,
        },
        "audio": {"input": audio_input, "output": {"format": dict(fmt)}},
        "output_modalities": ["audio"],
        "tools": tools,
        "tool_choice": "auto",
    }
    if settings.reasoning_effort:
        session["reasoning"] = {"effort": settings.reasoning_effort}
    return session


def session_update(session: dict[str, Any]) -> dict[str, Any]:
    return {"type": "session.update", "session": session}


def input_audio_append(audio_b64: str) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": audio_b64}


def response_create() -> dict[str, Any]:
    return {"type": "response.create"}


def response_cancel() -> dict[str, Any]:
    return {"type": "response.cancel"}


def item_truncate(item_id: str, content_index: int, audio_end_ms: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": content_index,
        "audio_end_ms": max(0, int(audio_end_ms)),
    }


def function_call_output(call_id: str, output: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": json.dumps(output)},
    }


def force_message(text: str, *, interruptible: bool = True) -> dict[str, Any]:
    """xAI-only: speak `text` verbatim; the server runs a full response cycle for it (no response.create)."""
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "force_message",
            "role": "assistant",
            "interruptible": interruptible,
            "content": [{"type": "output_text", "text": text}],
        },
    }


def user_text(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


def history_item(role: str, text: str) -> dict[str, Any]:
    """One line of an earlier session's conversation, replayed into a reopened session.

    User lines are `message` items with `input_text` content (docs/xai-realtime.md, "Responses"). Assistant
    lines are `message` items with `output_text` content: OpenAI GA's shape for assistant items, and the content
    type xAI's own `force_message` uses; xAI does not document assistant messages, so a server that refuses
    them answers with an `error` event, which costs only that line of context (the call goes on).
    """
    if role == "assistant":
        return {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]},
        }
    return user_text(text)


# ---------------------------------------------------------------------------------------------- server events


class ServerEvent(msgspec.Struct, kw_only=True, frozen=True):
    type: str
    event_id: str = ""


class SessionEvent(ServerEvent, kw_only=True, frozen=True):
    """session.created, session.updated, conversation.created."""

    session: dict[str, Any] = msgspec.field(default_factory=dict)
    conversation: dict[str, Any] = msgspec.field(default_factory=dict)


class Ping(ServerEvent, kw_only=True, frozen=True):
    timestamp: int | float | None = None


class ErrorInfo(msgspec.Struct, kw_only=True, frozen=True):
    type: str = ""
    code: str | None = None
    message: str = ""


class ErrorEvent(ServerEvent, kw_only=True, frozen=True):
    error: ErrorInfo = msgspec.field(default_factory=ErrorInfo)

    @property
    def benign(self) -> bool:
        return self.error.message.startswith(BENIGN_ERROR_PREFIXES)


class SpeechStarted(ServerEvent, kw_only=True, frozen=True):
    audio_start_ms: int | float = 0
    item_id: str | None = None


class SpeechStopped(ServerEvent, kw_only=True, frozen=True):
    audio_end_ms: int | float = 0
    item_id: str | None = None


class AudioCommitted(ServerEvent, kw_only=True, frozen=True):
    item_id: str | None = None
    previous_item_id: str | None = None


class Item(msgspec.Struct, kw_only=True, frozen=True):
    id: str = ""
    type: str = "message"
    role: str | None = None
    status: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    content: Any = None  # a list of parts; not validated, so a drift here never hides the item

    @property
    def is_text(self) -> bool:
        """A typed message (e.g. a replayed history line), not speech: it has no place in the spoken transcript."""
        return isinstance(self.content, list) and any(
            isinstance(c, dict) and c.get("type") in ("input_text", "output_text", "text") for c in self.content)


class ItemAdded(ServerEvent, kw_only=True, frozen=True):
    """conversation.item.added / conversation.item.created."""

    item: Item = msgspec.field(default_factory=Item)
    previous_item_id: str | None = None


class InputTranscription(ServerEvent, kw_only=True, frozen=True):
    """`...input_audio_transcription.completed` (or `.updated`): a cumulative snapshot for `item_id`."""

    item_id: str = ""
    transcript: str = ""
    status: str | None = None  # "in_progress" | "completed" when the server says so

    @property
    def is_final(self) -> bool | None:
        """True/False when the server states it; None when only a debounce can tell."""
        if self.status is None:
            return None
        return self.status == "completed"


class ResponseInfo(msgspec.Struct, kw_only=True, frozen=True):
    id: str = ""
    status: str | None = None
    output: list[dict[str, Any]] = msgspec.field(default_factory=list)


class ResponseCreated(ServerEvent, kw_only=True, frozen=True):
    response: ResponseInfo = msgspec.field(default_factory=ResponseInfo)


class ResponseDone(ServerEvent, kw_only=True, frozen=True):
    response: ResponseInfo = msgspec.field(default_factory=ResponseInfo)

    def transcripts(self) -> dict[str, str]:
        """item_id -> transcript from `response.output[].content[]` (a fallback when deltas were missed)."""
        found: dict[str, str] = {}
        for item in self.response.output:
            if not isinstance(item, dict) or item.get("type") != "message":
                continue
            parts = [c.get("transcript") or c.get("text") or "" for c in item.get("content") or []
                     if isinstance(c, dict)]
            text = "".join(p for p in parts if isinstance(p, str))
            if text and isinstance(item.get("id"), str):
                found[item["id"]] = text
        return found


class OutputItemAdded(ServerEvent, kw_only=True, frozen=True):
    response_id: str = ""
    output_index: int = 0
    item: Item = msgspec.field(default_factory=Item)


class AudioDelta(ServerEvent, kw_only=True, frozen=True):
    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0
    delta: str = ""


class AudioDone(ServerEvent, kw_only=True, frozen=True):
    response_id: str = ""
    item_id: str = ""


class TranscriptDelta(ServerEvent, kw_only=True, frozen=True):
    response_id: str = ""
    item_id: str = ""
    delta: str = ""


class TranscriptDone(ServerEvent, kw_only=True, frozen=True):
    response_id: str = ""
    item_id: str = ""
    transcript: str | None = None  # Grok may omit it: accumulate the deltas


class FunctionCallDone(ServerEvent, kw_only=True, frozen=True):
    response_id: str = ""
    item_id: str = ""
    call_id: str = ""
    name: str = ""
    arguments: str = "{}"

    def parsed_arguments(self) -> dict[str, Any]:
        """The JSON arguments as a dict; malformed JSON yields {} (the tool validates fields itself)."""
        try:
            value = json.loads(self.arguments or "{}")
        except (ValueError, TypeError):
            return {}
        return value if isinstance(value, dict) else {}


class UnknownEvent(ServerEvent, kw_only=True, frozen=True):
    """An event type this build does not act on."""


_TYPES: dict[str, type[ServerEvent]] = {
    "session.created": SessionEvent,
    "session.updated": SessionEvent,
    "conversation.created": SessionEvent,
    "ping": Ping,
    "error": ErrorEvent,
    "input_audio_buffer.speech_started": SpeechStarted,
    "input_audio_buffer.speech_stopped": SpeechStopped,
    "input_audio_buffer.committed": AudioCommitted,
    "conversation.item.added": ItemAdded,
    "conversation.item.created": ItemAdded,
    "conversation.item.input_audio_transcription.completed": InputTranscription,
    "conversation.item.input_audio_transcription.updated": InputTranscription,
    "response.created": ResponseCreated,
    "response.done": ResponseDone,
    "response.output_item.added": OutputItemAdded,
    "response.output_audio.delta": AudioDelta,
    "response.audio.delta": AudioDelta,
    "response.output_audio.done": AudioDone,
    "response.audio.done": AudioDone,
    "response.output_audio_transcript.delta": TranscriptDelta,
    "response.audio_transcript.delta": TranscriptDelta,
    "response.output_audio_transcript.done": TranscriptDone,
    "response.audio_transcript.done": TranscriptDone,
    "response.function_call_arguments.done": FunctionCallDone,
}

# Beta spellings normalised to the GA names the bridge matches on.
CANONICAL: dict[str, str] = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "conversation.item.created": "conversation.item.added",
    "conversation.item.input_audio_transcription.updated": "conversation.item.input_audio_transcription.completed",
}


class RealtimeProtocolError(ValueError):
    """A server frame that is not a JSON object with a string `type`."""


class _Head(msgspec.Struct):
    """Just enough of a frame to pick its decoder (any other fields are skipped, not built)."""

    type: Any = None
    event_id: Any = None


_head_decoder = msgspec.json.Decoder(_Head)
# One typed decoder per event type: decoding straight into the Struct builds no intermediate dict (for speed:
# audio deltas arrive 50 times a second per call).
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {kind: msgspec.json.Decoder(cls) for kind, cls in _TYPES.items()}


_DELTA_DECODER = _DECODERS["response.output_audio.delta"]
_DELTA_TYPE = "response.output_audio.delta"
_DELTA_PROBE = b'"response.output_audio.delta"'


def parse_server_event(data: str | bytes) -> ServerEvent:
    """Parse one server frame. Unknown types -> UnknownEvent; a known type with bad fields -> UnknownEvent too
    (logged by the caller), so a schema drift degrades one feature instead of the call."""
    if type(data) is bytes and _DELTA_PROBE in data[:64]:
        # Nearly every frame is an audio delta: decoded once, straight into its Struct, when its type is where
        # servers put it (first); anything else, or a delta that does not decode, takes the general path.
        try:
            event: ServerEvent = _DELTA_DECODER.decode(data)
        except msgspec.DecodeError:
            pass
        else:
            if event.type == _DELTA_TYPE:
                return event
    try:
        head = _head_decoder.decode(data)
    except msgspec.DecodeError as exc:  # includes a JSON value that is not an object
        raise RealtimeProtocolError(f"server frame is not a JSON object: {exc}") from exc
    kind = head.type
    if not isinstance(kind, str):
        raise RealtimeProtocolError("server frame has no string 'type'")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        return UnknownEvent(type=kind, event_id=str(head.event_id or ""))
    try:
        event = decoder.decode(data)
    except msgspec.ValidationError:
        return UnknownEvent(type=f"invalid:{kind}", event_id=str(head.event_id or ""))
    canonical = CANONICAL.get(kind)
    return event if canonical is None else msgspec.structs.replace(event, type=canonical)


def session_audio_format(session: dict[str, Any], direction: str) -> str | None:
    """The `audio.<direction>.format.type` a session echoes (None when it does not say)."""
    try:
        fmt = session["audio"][direction]["format"]
    except (KeyError, TypeError):
        return None
    if isinstance(fmt, dict):
        value = fmt.get("type")
        return value if isinstance(value, str) else None
    return fmt if isinstance(fmt, str) else None
