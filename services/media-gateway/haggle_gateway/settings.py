"""Everything the media gateway can be tuned with, in one frozen value.

Why a dataclass and not env reads scattered through the code: the composition root builds it once from the
shared settings (`run.gateway_settings`, from haggle/settings_table.py, which also holds the defaults of the
fields an environment variable sets), tests build it directly with small timeouts, and a frozen value
cannot drift while calls are live. Secrets are excluded from `repr` so a logged settings object leaks
nothing; `mask_phone` / `mask_secret` are the helpers every module uses before logging such values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from haggle.settings_table import DEFAULTS

AudioFormat = Literal["pcmu", "pcm24k"]
Disclosure = Literal["off", "upfront"]
GreetingMode = Literal["force_message", "response"]
VoicemailAction = Literal["hangup", "message"]


@dataclass(frozen=True)
class GatewaySettings:
    public_base_url: str
    twilio_account_sid: str
    twilio_auth_token: str = field(repr=False)
    twilio_api_base_url: str = DEFAULTS["twilio_api_base_url"]
    xai_api_key: str = field(default="", repr=False)
    xai_realtime_url: str = DEFAULTS["xai_realtime_url"]
    realtime_model: str = DEFAULTS["realtime_model"]  # pinned: see its row in the table
    # Send `?model=` (all 2026 sources do); if the handshake is refused, the client retries once without it.
    realtime_model_in_query: bool = True
    reasoning_effort: str | None = None  # think models: "none" | "high"; None leaves the server default
    voice: str = DEFAULTS["realtime_voice"]
    audio_format: AudioFormat = DEFAULTS["realtime_audio_format"]
    ai_disclosure: Disclosure = DEFAULTS["ai_disclosure"]
    # RECORD_CALLS=on: calls are recorded through Twilio (docs/twilio-recording.md) and the opening line ends with
    # `recording_notice`; off, the notice is not said.
    record_calls: bool = DEFAULTS["record_calls"]
    recording_notice: str = DEFAULTS["recording_notice"]
    transfer_ring_s: float = DEFAULTS["transfer_ring_s"]  # how long a transfer rings the homeowner
    forward_unknown_to: str | None = DEFAULTS["forward_unknown_to"]  # a caller Haggle never called is put through
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
    silence_timeout_s: float = DEFAULTS["silence_timeout_s"]
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
    voicemail_action: VoicemailAction = DEFAULTS["voicemail_action"]  # VOICEMAIL_ACTION: hang up, or leave one message
    callback_number: str = ""  # CALLBACK_NUMBER (default TWILIO_PHONE_NUMBER): said in a voicemail message
    hold_timeout_s: float = DEFAULTS["hold_timeout_s"]  # HOLD_TIMEOUT_SECONDS: the longest wait on hold
    voicemail_reply_wait_s: float = 6.0  # after our opening line, silence this long on a suspected machine
    playback_lead_ms: float = 1000.0  # agent audio queued at Twilio at most; the rest waits in the gateway
    max_malformed_frames: int = 20  # after `start`: tolerated before the stream is treated as hostile
    use_competing_quotes: bool = DEFAULTS["use_competing_quotes"]  # the offer policy may cite a real competing quote

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
