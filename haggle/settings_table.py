"""Every setting once: its field, its environment variable, how the variable is read, and its default.

Why a table: the settings used to be typed three times (a dataclass field with its default, a line in
`from_env` repeating the default, a copy in each service's own settings class), and the copies drifted. Here a
row is the only place a setting is declared; `haggle.config.Settings` is built from the rows, each service picks
its own fields from a `Settings` (`pick`), and a service's own settings class takes its defaults from `DEFAULTS`.
The README's configuration table is checked against these rows (tests/test_config.py).

A parser gets the variable's name and its stripped, non-empty text and returns the value or raises
`ConfigError` naming the variable; an unset or blank variable gives the row's default, which is not parsed.
Rules that tie settings together (DOMAIN as a fallback for PUBLIC_BASE_URL, SUPABASE_URL and SUPABASE_KEY set
together, CALLBACK_NUMBER falling back to TWILIO_PHONE_NUMBER) live in `haggle.config.Settings.from_env`.

A new setting is one row in `SETTINGS` (a parser from this module, or a function of the same shape) and one row
in the README's configuration table; `Settings.<field>` then exists with the row's default. A service whose own
settings class has a field of the same name gets it through `pick`; the class's default is `DEFAULTS["<field>"]`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A missing or malformed setting; the message names it."""


Parser = Callable[[str, str], Any]
T = TypeVar("T")


def _masked(value: str) -> str:
    from .logs import mask_urls  # secrets inside URLs never reach an error message

    return mask_urls(value)


# --- parsers -------------------------------------------------------------------------------------------------


def text(name: str, raw: str) -> str:
    return raw


def flag(name: str, raw: str) -> bool:
    return raw.lower() in ("1", "true", "yes")


def on_off(name: str, raw: str) -> bool:
    """A switch that says which way it was meant: anything but on/off (1/0, true/false, yes/no) is an error."""
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be on or off (1/0, true/false, yes/no; got {raw!r})")


def path(name: str, raw: str) -> Path:
    return Path(raw)


def _at_least(convert: Callable[[str], T], what: str, minimum: T) -> Parser:
    def parse(name: str, raw: str) -> T:
        try:
            value = convert(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {what} (got {raw!r})") from None
        if value < minimum:  # type: ignore[operator]
            raise ConfigError(f"{name} must be at least {minimum} (got {value})")
        return value

    return parse


def whole(minimum: int = 0) -> Parser:
    return _at_least(int, "a whole number", minimum)


def number(minimum: float = 0.0) -> Parser:
    return _at_least(float, "a number", minimum)


def choice(*choices: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
        return value

    return parse


def url(*schemes: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        parsed = urlparse(raw)
        if parsed.scheme not in schemes or not (parsed.netloc or parsed.scheme == "sqlite"):
            raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL (got {_masked(raw)!r})")
        return raw.rstrip("/")

    return parse


def matching(pattern: str, expected: str, *, show: bool = True) -> Parser:
    """A value of a fixed shape; `show=False` keeps a near-secret (an account SID) out of the message."""

    def parse(name: str, raw: str) -> str:
        if not re.fullmatch(pattern, raw):
            got = f" (got {raw!r})" if show else ""
            raise ConfigError(f"{name} must be {expected}{got}")
        return raw

    return parse


e164 = matching(r"\+[1-9]\d{6,14}", "an E.164 number like +14155550100")


def nats_urls(name: str, raw: str) -> str:
    """One URL, or a comma-separated list of cluster seeds."""
    for part in raw.split(","):
        url("nats", "tls", "ws", "wss")(name, part.strip())
    return raw


def projection_url(name: str, raw: str) -> str:
    if not raw.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(f"{name} must start with sqlite:/// or postgresql:// (got {_masked(raw)[:40]!r})")
    return raw


def optional_port(name: str, raw: str) -> int | None:
    return whole(0)(name, raw) or None


def calling_hours(name: str, raw: str) -> tuple[time, time] | None:
    """`08:00-21:00` -> (08:00, 21:00); `any` -> None (no window)."""
    if raw.strip().lower() == "any":
        return None
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", raw)
    if not m:
        raise ConfigError(f"{name} must look like 08:00-21:00 or be 'any' (got {raw!r})")
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    if not (0 <= h1 <= 23 and 0 <= h2 <= 24 and m1 < 60 and m2 < 60):
        raise ConfigError(f"{name} has an impossible time (got {raw!r})")
    start, end = time(h1, m1), (time(23, 59, 59) if h2 == 24 else time(h2, m2))
    if start >= end:
        raise ConfigError(f"{name} must start before it ends (got {raw!r})")
    return start, end


# --- the table -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    """One setting. `secret`: never printed, `describe()` says only set/unset. `private`: kept out of `repr`
    (a URL that may carry a password; `describe()` masks it)."""

    field: str
    env: str
    parse: Parser
    default: Any = None
    secret: bool = False
    private: bool = False

    def read(self, env: Mapping[str, str]) -> Any:
        raw = env.get(self.env)
        raw = raw.strip() if raw else None
        return self.parse(self.env, raw) if raw else self.default


SETTINGS: tuple[Var, ...] = (
    # Bus and storage
    Var("nats_url", "NATS_URL", nats_urls, private=True),
    Var("nats_creds", "NATS_CREDS", text),  # a credentials file (nkey + JWT)
    Var("nats_connect_timeout_s", "NATS_CONNECT_TIMEOUT_SECONDS", number(0.1), 30.0),
    Var("data_dir", "HAGGLE_DATA_DIR", path, Path(".haggle")),
    Var("stream_max_age_s", "STREAM_MAX_AGE_SECONDS", number(60), 365 * 24 * 3600.0),
    Var("stream_replicas", "STREAM_REPLICAS", whole(1), 1),
    Var("projection_url", "PROJECTION_URL", projection_url, private=True),
    Var("supabase_url", "SUPABASE_URL", url("http", "https")),
    Var("supabase_key", "SUPABASE_KEY", text, secret=True),
    # HTTP
    Var("public_base_url", "PUBLIC_BASE_URL", url("http", "https")),
    Var("domain", "DOMAIN", text),  # the seed's bare host name: https://<it> when PUBLIC_BASE_URL is unset
    Var("allow_insecure_public_url", "ALLOW_INSECURE_PUBLIC_URL", flag, False),  # http:// for loopback stand-ins
    Var("host", "HAGGLE_HOST", text, "127.0.0.1"),
    Var("port", "PORT", whole(0), 8000),
    Var("api_key", "HAGGLE_API_KEY", text, secret=True),
    Var("insecure_no_auth", "HAGGLE_INSECURE_NO_AUTH", flag, False),  # a non-loopback address without a key
    Var("max_body_bytes", "MAX_BODY_BYTES", whole(1024), 1_048_576),  # larger HTTP bodies get 413
    Var("metrics_port", "METRICS_PORT", optional_port),  # /metrics there (no key) instead of on PORT (key)
    Var("event_loop", "HAGGLE_EVENT_LOOP", choice("auto", "uvloop", "asyncio"), "auto"),  # haggle/loop.py
    # Twilio
    Var("twilio_account_sid", "TWILIO_ACCOUNT_SID",
        matching(r"AC[0-9a-fA-F]{32}", "'AC' followed by 32 hex characters", show=False)),
    Var("twilio_auth_token", "TWILIO_AUTH_TOKEN", text, secret=True),
    Var("twilio_phone_number", "TWILIO_PHONE_NUMBER", e164),
    Var("twilio_api_base_url", "TWILIO_API_BASE_URL", url("http", "https"), "https://api.twilio.com"),
    Var("ring_timeout_s", "RING_TIMEOUT_SECONDS", whole(5), 25),
    Var("call_time_limit_s", "CALL_TIME_LIMIT_SECONDS", whole(30), 900),
    Var("twilio_http_timeout_s", "TWILIO_HTTP_TIMEOUT_SECONDS", number(0.1), 10.0),  # docs/twilio-rest.md
    Var("dial_retry_window_s", "DIAL_RETRY_WINDOW_SECONDS", number(0), 600.0),  # 429/5xx/timeouts delay a dial
    # xAI
    Var("xai_api_key", "XAI_API_KEY", text, secret=True),
    Var("xai_realtime_url", "XAI_REALTIME_URL", url("ws", "wss"), "wss://api.x.ai/v1/realtime"),
    Var("xai_api_base_url", "XAI_API_BASE_URL", url("http", "https"), "https://api.x.ai/v1"),
    Var("xai_model", "XAI_MODEL", text, "grok-4.3"),
    # Pinned rather than `grok-voice-latest`: xAI's model list has grok-voice-think-fast-1.0 as a documented,
    # non-deprecated id, while `-latest` silently moved to a new model on 2026-08-05; a negotiation agent's
    # behaviour should only change when we change this line.
    Var("realtime_model", "XAI_REALTIME_MODEL", text, "grok-voice-think-fast-1.0"),
    Var("realtime_voice", "REALTIME_VOICE", text, "Rex"),
    Var("realtime_audio_format", "REALTIME_AUDIO_FORMAT", choice("pcmu", "pcm24k"), "pcmu"),
    Var("ai_disclosure", "AI_DISCLOSURE", choice("off", "upfront"), "off"),
    Var("silence_timeout_s", "SILENCE_TIMEOUT_SECONDS", number(1), 20.0),
    Var("voicemail_action", "VOICEMAIL_ACTION", choice("hangup", "message"), "hangup"),
    Var("callback_number", "CALLBACK_NUMBER", text),  # unset: TWILIO_PHONE_NUMBER
    Var("hold_timeout_s", "HOLD_TIMEOUT_SECONDS", number(1), 300.0),
    Var("drain_s", "GATEWAY_DRAIN_SECONDS", number(0.1), 30.0),  # on SIGTERM, how long live calls get to finish
    # The homeowner and the operator in the loop
    Var("record_calls", "RECORD_CALLS", on_off, False),  # docs/twilio-recording.md
    Var("recording_notice", "RECORDING_NOTICE", text, "This call is recorded."),  # said in the opening when on
    Var("forward_unknown_to", "FORWARD_UNKNOWN_TO", e164),  # docs/twilio-inbound.md
    Var("transfer_ring_s", "TRANSFER_RING_SECONDS", number(5), 20.0),  # docs/twilio-transfer.md
    Var("realtime_price_per_minute", "REALTIME_PRICE_PER_MINUTE", number(0), 0.05),  # docs/call-cost.md
    # Dispatcher policy
    Var("max_concurrent_calls", "MAX_CONCURRENT_CALLS", whole(1), 10),
    Var("calls_per_second", "CALLS_PER_SECOND", number(0.01), 1.0),
    Var("max_call_attempts", "MAX_CALL_ATTEMPTS", whole(1), 3),
    Var("retry_delay_s", "RETRY_DELAY_SECONDS", number(0), 600.0),
    Var("reconcile_s", "RECONCILE_SECONDS", number(1), 30.0),  # live calls checked against Twilio this often
    Var("calling_hours", "CALLING_HOURS", calling_hours, (time(8, 0), time(21, 0))),
    # Negotiation (docs/negotiation.md)
    Var("negotiation_strategy", "NEGOTIATION_STRATEGY", choice("market", "independent"), "market"),
    Var("negotiation_rounds", "NEGOTIATION_ROUNDS", whole(1), 2),
    Var("use_competing_quotes", "USE_COMPETING_QUOTES", on_off, True),
    # Results
    Var("results_webhook_url", "RESULTS_WEBHOOK_URL", url("http", "https")),
    Var("results_webhook_secret", "RESULTS_WEBHOOK_SECRET", text, secret=True),
)

BY_FIELD: dict[str, Var] = {v.field: v for v in SETTINGS}
BY_ENV: dict[str, Var] = {v.env: v for v in SETTINGS}


# A setting's default by field, for a service's own settings class (so it is not typed a second time).
DEFAULTS: Mapping[str, Any] = MappingProxyType({v.field: v.default for v in SETTINGS})


def read(env_name: str, env: Mapping[str, str]) -> Any:
    """One variable, for code that runs before `Settings` exists (the event loop, the embedded NATS dir)."""
    return BY_ENV[env_name].read(env)


def pick(settings: object, cls: type[T], renames: Mapping[str, str] | None = None, **values: Any) -> T:
    """A service's settings from the shared ones: every field of the dataclass `cls` that `settings` has (under
    the same name, or the one `renames` maps it to) is copied; `values` are the service's own choices."""
    renames = renames or {}
    for f in fields(cls):  # type: ignore[arg-type]
        source = renames.get(f.name, f.name)
        if f.name not in values and source in BY_FIELD:
            values[f.name] = getattr(settings, source)
    return cls(**values)
