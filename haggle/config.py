"""Configuration from the environment (and `.env`), validated at start with one clear line per problem.

Names follow the seed (XAI_API_KEY, TWILIO_*, SUPABASE_*, DOMAIN) plus Haggle's own. Each service asks
only for what it needs (`require_twilio()` etc.), so `haggle run projector` does not demand Twilio keys.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from datetime import time
from pathlib import Path
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A missing or malformed setting; the message names it."""


def _env(name: str, env: dict[str, str]) -> str | None:
    value = env.get(name)
    return value.strip() if value and value.strip() else None


def _masked(value: str) -> str:
    from .logs import mask_urls  # secrets inside URLs never reach an error message

    return mask_urls(value)


def _int(name: str, env: dict[str, str], default: int, *, minimum: int = 0) -> int:
    raw = _env(name, env)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (got {raw!r})") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum} (got {value})")
    return value


def _float(name: str, env: dict[str, str], default: float, *, minimum: float = 0.0) -> float:
    raw = _env(name, env)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number (got {raw!r})") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum} (got {value})")
    return value


def _e164(name: str, env: dict[str, str]) -> str | None:
    value = _env(name, env)
    if value and not re.fullmatch(r"\+[1-9]\d{6,14}", value):
        raise ConfigError(f"{name} must be an E.164 number like +14155550100 (got {value!r})")
    return value


def _choice(name: str, env: dict[str, str], default: str, choices: tuple[str, ...]) -> str:
    raw = (_env(name, env) or default).lower()
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {raw!r})")
    return raw


def _url(name: str, env: dict[str, str], default: str | None, schemes: tuple[str, ...]) -> str | None:
    raw = _env(name, env) or default
    if raw is None:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.scheme == "sqlite"):
        raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL (got {_masked(raw)!r})")
    return raw.rstrip("/")


def parse_calling_hours(raw: str) -> tuple[time, time] | None:
    """`08:00-21:00` -> (08:00, 21:00); `any` -> None (no window)."""
    if raw.strip().lower() == "any":
        return None
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", raw)
    if not m:
        raise ConfigError(f"CALLING_HOURS must look like 08:00-21:00 or be 'any' (got {raw!r})")
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    if not (0 <= h1 <= 23 and 0 <= h2 <= 24 and m1 < 60 and m2 < 60):
        raise ConfigError(f"CALLING_HOURS has an impossible time (got {raw!r})")
    start, end = time(h1, m1), (time(23, 59, 59) if h2 == 24 else time(h2, m2))
    if start >= end:
        raise ConfigError(f"CALLING_HOURS must start before it ends (got {raw!r})")
    return start, end


@dataclass(frozen=True)
class Settings:
    # Bus and storage
    nats_url: str | None = field(default=None, repr=False)  # may carry a password
    nats_creds: str | None = None  # NATS_CREDS: a credentials file (nkey + JWT) for NATS auth
    nats_connect_timeout_s: float = 30.0  # NATS_CONNECT_TIMEOUT_SECONDS: the first connection's deadline
    data_dir: Path = Path(".haggle")
    stream_max_age_s: float = 365 * 24 * 3600.0
    stream_replicas: int = 1
    projection_url: str | None = field(default=None, repr=False)  # may carry a password
    supabase_url: str | None = None
    supabase_key: str | None = None
    # HTTP
    public_base_url: str | None = None
    allow_insecure_public_url: bool = False  # ALLOW_INSECURE_PUBLIC_URL=1: http:// for loopback stand-ins only
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    insecure_no_auth: bool = False  # HAGGLE_INSECURE_NO_AUTH=1: serve a non-loopback address without a key
    max_body_bytes: int = 1_048_576  # MAX_BODY_BYTES: larger HTTP bodies get 413
    metrics_port: int | None = None  # METRICS_PORT: serve /metrics there (no key) instead of on PORT (key)
    # Twilio
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_phone_number: str | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    ring_timeout_s: int = 25
    call_time_limit_s: int = 900
    twilio_http_timeout_s: float = 10.0  # every Twilio REST request (docs/twilio-rest.md)
    dial_retry_window_s: float = 600.0  # how long 429 / 5xx / timeouts delay a dial before it fails
    # xAI
    xai_api_key: str | None = field(default=None, repr=False)
    xai_realtime_url: str = "wss://api.x.ai/v1/realtime"
    xai_api_base_url: str = "https://api.x.ai/v1"
    xai_model: str = "grok-4.3"
    realtime_model: str = "grok-voice-think-fast-1.0"
    realtime_voice: str = "Rex"
    realtime_audio_format: str = "pcmu"
    ai_disclosure: str = "off"
    silence_timeout_s: float = 20.0
    voicemail_action: str = "hangup"  # VOICEMAIL_ACTION: hangup | message
    callback_number: str | None = None  # CALLBACK_NUMBER; None: TWILIO_PHONE_NUMBER
    hold_timeout_s: float = 300.0  # HOLD_TIMEOUT_SECONDS
    drain_s: float = 30.0  # on SIGTERM, how long live calls get to finish
    # Dispatcher policy
    max_concurrent_calls: int = 10
    calls_per_second: float = 1.0
    max_call_attempts: int = 3
    retry_delay_s: float = 600.0
    reconcile_s: float = 30.0  # how often live calls are checked against Twilio for a lost status callback
    calling_hours: tuple[time, time] | None = (time(8, 0), time(21, 0))
    # Cost: the realtime model's price per connected minute (xAI's published voice rate when written), which the
    # operator sets (docs/call-cost.md)
    realtime_price_per_minute: float = 0.05
    # Recordings with consent (docs/twilio-recording.md): RECORD_CALLS=on records every call dual-channel through
    # Twilio, and the agent's opening says so with RECORDING_NOTICE
    record_calls: bool = False
    recording_notice: str = "This call is recorded."
    # Callbacks (docs/twilio-inbound.md): a call from a number Haggle never called goes here (E.164), or gets
    # one polite line and a hang-up when unset
    forward_unknown_to: str | None = None
    transfer_ring_s: float = 20.0  # TRANSFER_RING_SECONDS: a transfer rings the homeowner this long
    # Results
    results_webhook_url: str | None = None
    results_webhook_secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, dotenv: bool = True) -> Settings:
        if env is None:
            if dotenv:
                from dotenv import dotenv_values

                file_values = {k: v for k, v in dotenv_values(".env").items() if v is not None}
                env = {**file_values, **os.environ}
            else:
                env = dict(os.environ)
        public = _url("PUBLIC_BASE_URL", env, None, ("http", "https"))
        if public is None and (domain := _env("DOMAIN", env)):
            # The seed configured a bare host name; Twilio needs https in production.
            domain = domain.removeprefix("https://").removeprefix("http://").rstrip("/")
            public = f"https://{domain}"
        allow_insecure = _env("ALLOW_INSECURE_PUBLIC_URL", env) in ("1", "true", "yes")
        if public and public.startswith("http://") and not allow_insecure:
            # Twilio opens media streams only on wss:// (port 443): an http:// base gives a ws:// stream URL,
            # and calls would connect, stay silent and drop.
            raise ConfigError(f"PUBLIC_BASE_URL must be https:// (got {public!r}); set "
                              "ALLOW_INSECURE_PUBLIC_URL=1 only for local stand-ins on plain loopback")
        phone = _env("TWILIO_PHONE_NUMBER", env)
        if phone and not re.fullmatch(r"\+[1-9]\d{6,14}", phone):
            raise ConfigError(f"TWILIO_PHONE_NUMBER must be an E.164 number like +14155550100 (got {phone!r})")
        sid = _env("TWILIO_ACCOUNT_SID", env)
        if sid and not re.fullmatch(r"AC[0-9a-fA-F]{32}", sid):
            raise ConfigError("TWILIO_ACCOUNT_SID must be 'AC' followed by 32 hex characters")
        projection = _env("PROJECTION_URL", env)
        if projection and not projection.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError(
                f"PROJECTION_URL must start with sqlite:/// or postgresql:// (got {_masked(projection)[:40]!r})")
        supabase_url = _url("SUPABASE_URL", env, None, ("http", "https"))
        supabase_key = _env("SUPABASE_KEY", env)
        if bool(supabase_url) != bool(supabase_key):
            raise ConfigError("SUPABASE_URL and SUPABASE_KEY must be set together")
        webhook = _url("RESULTS_WEBHOOK_URL", env, None, ("http", "https"))
        nats_url = _env("NATS_URL", env)
        if nats_url:  # one URL, or a comma-separated list of cluster seeds
            for part in nats_url.split(","):
                _url("NATS_URL", {"NATS_URL": part.strip()}, None, ("nats", "tls", "ws", "wss"))
        return cls(
            nats_url=nats_url,
            nats_creds=_env("NATS_CREDS", env),
            nats_connect_timeout_s=_float("NATS_CONNECT_TIMEOUT_SECONDS", env, 30.0, minimum=0.1),
            data_dir=Path(_env("HAGGLE_DATA_DIR", env) or ".haggle"),
            stream_max_age_s=_float("STREAM_MAX_AGE_SECONDS", env, 365 * 24 * 3600.0, minimum=60),
            stream_replicas=_int("STREAM_REPLICAS", env, 1, minimum=1),
            projection_url=projection,
            supabase_url=supabase_url,
            supabase_key=supabase_key,
            public_base_url=public,
            allow_insecure_public_url=allow_insecure,
            host=_env("HAGGLE_HOST", env) or "127.0.0.1",
            port=_int("PORT", env, 8000, minimum=0),
            api_key=_env("HAGGLE_API_KEY", env),
            insecure_no_auth=(_env("HAGGLE_INSECURE_NO_AUTH", env) or "0").lower() in ("1", "true", "yes"),
            max_body_bytes=_int("MAX_BODY_BYTES", env, 1_048_576, minimum=1024),
            metrics_port=_int("METRICS_PORT", env, 0, minimum=0) or None,
            twilio_account_sid=sid,
            twilio_auth_token=_env("TWILIO_AUTH_TOKEN", env),
            twilio_phone_number=phone,
            twilio_api_base_url=_url("TWILIO_API_BASE_URL", env, "https://api.twilio.com", ("http", "https"))
            or "https://api.twilio.com",
            ring_timeout_s=_int("RING_TIMEOUT_SECONDS", env, 25, minimum=5),
            call_time_limit_s=_int("CALL_TIME_LIMIT_SECONDS", env, 900, minimum=30),
            twilio_http_timeout_s=_float("TWILIO_HTTP_TIMEOUT_SECONDS", env, 10.0, minimum=0.1),
            dial_retry_window_s=_float("DIAL_RETRY_WINDOW_SECONDS", env, 600.0, minimum=0),
            xai_api_key=_env("XAI_API_KEY", env),
            xai_realtime_url=_url("XAI_REALTIME_URL", env, "wss://api.x.ai/v1/realtime", ("ws", "wss"))
            or "wss://api.x.ai/v1/realtime",
            xai_api_base_url=_url("XAI_API_BASE_URL", env, "https://api.x.ai/v1", ("http", "https"))
            or "https://api.x.ai/v1",
            xai_model=_env("XAI_MODEL", env) or "grok-4.3",
            realtime_model=_env("XAI_REALTIME_MODEL", env) or "grok-voice-think-fast-1.0",
            realtime_voice=_env("REALTIME_VOICE", env) or "Rex",
            realtime_audio_format=_choice("REALTIME_AUDIO_FORMAT", env, "pcmu", ("pcmu", "pcm24k")),
            ai_disclosure=_choice("AI_DISCLOSURE", env, "off", ("off", "upfront")),
            silence_timeout_s=_float("SILENCE_TIMEOUT_SECONDS", env, 20.0, minimum=1),
            voicemail_action=_choice("VOICEMAIL_ACTION", env, "hangup", ("hangup", "message")),
            callback_number=_env("CALLBACK_NUMBER", env) or phone,
            hold_timeout_s=_float("HOLD_TIMEOUT_SECONDS", env, 300.0, minimum=1),
            drain_s=_float("GATEWAY_DRAIN_SECONDS", env, 30.0, minimum=0.1),
            max_concurrent_calls=_int("MAX_CONCURRENT_CALLS", env, 10, minimum=1),
            calls_per_second=_float("CALLS_PER_SECOND", env, 1.0, minimum=0.01),
            max_call_attempts=_int("MAX_CALL_ATTEMPTS", env, 3, minimum=1),
            retry_delay_s=_float("RETRY_DELAY_SECONDS", env, 600.0, minimum=0),
            reconcile_s=_float("RECONCILE_SECONDS", env, 30.0, minimum=1),
            calling_hours=parse_calling_hours(_env("CALLING_HOURS", env) or "08:00-21:00"),
            realtime_price_per_minute=_float("REALTIME_PRICE_PER_MINUTE", env, 0.05, minimum=0),
            record_calls=_choice("RECORD_CALLS", env, "off", ("off", "on")) == "on",
            recording_notice=_env("RECORDING_NOTICE", env) or "This call is recorded.",
            forward_unknown_to=_e164("FORWARD_UNKNOWN_TO", env),
            transfer_ring_s=_float("TRANSFER_RING_SECONDS", env, 20.0, minimum=5),
            results_webhook_url=webhook,
            results_webhook_secret=_env("RESULTS_WEBHOOK_SECRET", env),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    # Each service checks what it needs, so a missing key fails at start with its name.
    def require_twilio(self) -> None:
        for name, value in (
            ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
            ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
            ("TWILIO_PHONE_NUMBER", self.twilio_phone_number),
        ):
            if not value:
                raise ConfigError(f"{name} is not set (needed to place and verify calls)")
        self.require_public_url()

    def require_public_url(self) -> None:
        if not self.public_base_url:
            raise ConfigError("PUBLIC_BASE_URL (or DOMAIN) is not set: Twilio needs a public URL for webhooks")

    def require_realtime(self) -> None:
        if not self.xai_api_key:
            raise ConfigError("XAI_API_KEY is not set (needed for the realtime voice session)")

    def describe(self) -> dict[str, object]:
        """Settings safe to print: secrets show only whether they are set."""
        secret = {"api_key", "twilio_auth_token", "xai_api_key", "supabase_key", "results_webhook_secret"}
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = ("set" if value else "unset") if f.name in secret else _masked(str(value))
        return out
