"""Everything the media gateway can be tuned with, in one frozen value.

Why a dataclass and not env reads scattered through the code: the composition root maps environment
variables onto it once (see `from_env`), tests build it directly with small timeouts, and a frozen value
cannot drift while calls are live. Secrets are excluded from `repr` so a logged settings object leaks
nothing; `mask_phone` / `mask_secret` are the helpers every module uses before logging such values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

AudioFormat = Literal["pcmu", "pcm24k"]
Disclosure = Literal["off", "upfront"]
GreetingMode = Literal["force_message", "response"]
VoicemailAction = Literal["hangup", "message"]

# Pinned rather than `grok-voice-latest`: xAI's model list has grok-voice-think-fast-1.0 as a documented,
# non-deprecated id, while `-latest` silently moved to a new model on 2026-08-05; a negotiation
# agent's behaviour should only change when we change this line.
DEFAULT_REALTIME_MODEL = "grok-voice-think-fast-1.0"


@dataclass(frozen=True)
class GatewaySettings:
    public_base_url: str
    twilio_account_sid: str
    twilio_auth_token: str = field(repr=False)
    twilio_api_base_url: str = "https://api.twilio.com"
    xai_api_key: str = field(default="", repr=False)
    xai_realtime_url: str = "wss://api.x.ai/v1/realtime"
    realtime_model: str = DEFAULT_REALTIME_MODEL
    # Send `?model=` (all 2026 sources do); if the handshake is refused, the client retries once without it.
    realtime_model_in_query: bool = True
    reasoning_effort: str | None = None  # think models: "none" | "high"; None leaves the server default
    voice: str = "Rex"
    audio_format: AudioFormat = "pcmu"
    ai_disclosure: Disclosure = "off"
    # RECORD_CALLS=on: calls are recorded through Twilio (docs/twilio-recording.md) and the opening line ends with
    # `recording_notice`; off, the notice is not said.
    record_calls: bool = False
    recording_notice: str = "This call is recorded."
    transfer_ring_s: float = 20.0  # TRANSFER_RING_SECONDS: how long a transfer rings the homeowner
    forward_unknown_to: str = ""  # FORWARD_UNKNOWN_TO: a callback from a number Haggle never called is put through
    greeting_mode: GreetingMode = "force_message"
    # Turn detection sent to the model (xAI's defaults: 0.85 / 333 / 500; docs/xai-realtime.md).
    vad_threshold: float = 0.85
    vad_prefix_padding_ms: int = 333
    vad_silence_ms: int = 500
    transcription_model: str | None = None  # e.g. "grok-transcribe"; None: the server's default transcription
    # Greeting gate: open after this much silence from the callee, or after they finished their hello.
    greeting_wait_s: float = 1.5
    greeting_auto_grace_s: float = 0.8  # after the hello ends, how long the server gets to auto-respond
    greeting_voice_rms: float = 700.0  # local energy (16-bit RMS) that counts as the callee talking
    silence_timeout_s: float = 20.0
    max_call_s: float = 600.0
    start_deadline_s: float = 5.0
    max_frame_bytes: int = 65536
    max_messages_per_s: float = 200.0  # token bucket rate; the burst allowance is twice this
    hangup_fallback_s: float = 10.0  # hang up this long after end_call even if the goodbye mark never returns
    prewarm_ttl_s: float = 15.0
    call_sid_wait_s: float = 4.0  # how long a stream start waits for the dispatcher to store the CallSid
    realtime_connect_timeout_s: float = 8.0
    # A realtime session lost mid-call is reopened this many times (with the conversation so far) before the
    # call is ended with reason "realtime_error"; each reopen is bounded by `realtime_reconnect_timeout_s`, and
    # the callee's audio meanwhile is buffered (the most recent `reconnect_buffer_ms`) for the new session.
    realtime_reconnects: int = 1
    realtime_reconnect_timeout_s: float = 5.0
    reconnect_buffer_ms: int = 2000
    publish_flush_s: float = 5.0
    # Coalesce model deltas into Twilio frames of at least one 20 ms frame: tiny deltas stutter
    # (docs/twilio-media-streams.md, "Messages to Twilio");
    # bigger chunks add their length to the playback latency of every other frame (benchmarks/README.md).
    outbound_chunk_ms: int = 20
    truncate_on_barge_in: bool = True
    transcript_settle_s: float = 1.0  # a snapshot without a final status is final after this much quiet
    # Real phone lines (docs/twilio-media-streams.md, "Answering machine detection").
    voicemail_action: VoicemailAction = "hangup"  # VOICEMAIL_ACTION: on a voicemail, hang up or leave one message
    callback_number: str = ""  # CALLBACK_NUMBER (default TWILIO_PHONE_NUMBER): said in a voicemail message
    hold_timeout_s: float = 300.0  # HOLD_TIMEOUT_SECONDS: the longest the agent waits on hold
    voicemail_reply_wait_s: float = 6.0  # after our opening line, silence this long on a suspected machine
    playback_lead_ms: float = 1000.0  # agent audio queued at Twilio at most; the rest waits in the gateway
    max_malformed_frames: int = 20  # after `start`: tolerated before the stream is treated as hostile

    def __post_init__(self) -> None:
        base = self.public_base_url.rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"public_base_url must be an absolute http(s) URL, got {self.public_base_url!r}")
        if parts.query or parts.fragment:
            raise ValueError("public_base_url must not carry a query string or fragment")
        object.__setattr__(self, "public_base_url", base)
        if self.audio_format not in ("pcmu", "pcm24k"):
            raise ValueError(f"audio_format must be 'pcmu' or 'pcm24k', got {self.audio_format!r}")
        if self.ai_disclosure not in ("off", "upfront"):
            raise ValueError(f"ai_disclosure must be 'off' or 'upfront', got {self.ai_disclosure!r}")
        if self.voicemail_action not in ("hangup", "message"):
            raise ValueError(f"voicemail_action must be 'hangup' or 'message', got {self.voicemail_action!r}")
        if self.greeting_mode not in ("force_message", "response"):
            raise ValueError(f"greeting_mode must be 'force_message' or 'response', got {self.greeting_mode!r}")
        for name in ("greeting_wait_s", "silence_timeout_s", "max_call_s", "start_deadline_s", "hangup_fallback_s",
                     "prewarm_ttl_s", "max_messages_per_s", "realtime_connect_timeout_s",
                     "realtime_reconnect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.realtime_reconnects < 0 or self.reconnect_buffer_ms < 0:
            raise ValueError("realtime_reconnects and reconnect_buffer_ms must be >= 0")
        if self.max_frame_bytes < 1024:
            raise ValueError("max_frame_bytes must be at least 1024")

    @property
    def stream_url(self) -> str:
        """The Media Streams URL for TwiML: the public base with http->ws, https->wss, and no query string."""
        scheme, rest = self.public_base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/media-stream"

    @property
    def opening_notice(self) -> str:
        """What the opening line must add: the recording notice when calls are recorded, else nothing."""
        return self.recording_notice if self.record_calls else ""

    def public_url(self, path: str, query: str = "") -> str:
        """The URL Twilio signed for a webhook: built from the configured base, never from request headers."""
        return self.public_base_url + path + (f"?{query}" if query else "")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> GatewaySettings:
        """Read the documented environment variables; `overrides` win (for the composition root and tests)."""
        e = os.environ if env is None else env
        values: dict[str, object] = {
            "public_base_url": e.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000"),
            "twilio_account_sid": e.get("TWILIO_ACCOUNT_SID", ""),
            "twilio_auth_token": e.get("TWILIO_AUTH_TOKEN", ""),
            "twilio_api_base_url": e.get("TWILIO_API_BASE_URL", "https://api.twilio.com"),
            "xai_api_key": e.get("XAI_API_KEY", ""),
            "xai_realtime_url": e.get("XAI_REALTIME_URL", "wss://api.x.ai/v1/realtime"),
            "realtime_model": e.get("XAI_REALTIME_MODEL", DEFAULT_REALTIME_MODEL),
            "voice": e.get("REALTIME_VOICE", "Rex"),
            "audio_format": e.get("REALTIME_AUDIO_FORMAT", "pcmu"),
            "ai_disclosure": e.get("AI_DISCLOSURE", "off"),
            "voicemail_action": e.get("VOICEMAIL_ACTION", "hangup"),
            "callback_number": e.get("CALLBACK_NUMBER") or e.get("TWILIO_PHONE_NUMBER", ""),
            "hold_timeout_s": float(e.get("HOLD_TIMEOUT_SECONDS", "300")),
            "record_calls": e.get("RECORD_CALLS", "off") == "on",
            "forward_unknown_to": e.get("FORWARD_UNKNOWN_TO", ""),
            "transfer_ring_s": float(e.get("TRANSFER_RING_SECONDS", "20")),
            "recording_notice": e.get("RECORDING_NOTICE") or "This call is recorded.",
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def mask_phone(number: str | None) -> str:
    """`+14155550101` -> `+1415***0101`: enough to tell calls apart in logs, not enough to dial."""
    if not number:
        return "-"
    if len(number) <= 6:
        return "***"
    return f"{number[:5]}***{number[-4:]}"


def mask_secret(value: str | None) -> str:
    """Tokens and keys: length and a 3-character prefix at most."""
    if not value:
        return "-"
    return f"{value[:3]}…({len(value)})" if len(value) > 8 else "***"
