"""Configuration from the environment (and `.env`), validated at start with one clear line per problem.

Names follow the seed (XAI_API_KEY, TWILIO_*, SUPABASE_*, DOMAIN) plus Haggle's own. Every setting is one row of
`haggle.settings_table.SETTINGS` (field, variable, parser, default); `Settings` is the frozen value built from
those rows, and this module adds only the rules that tie settings together. Each service asks only for what it
needs (`require_twilio()` etc.), so `haggle run projector` does not demand Twilio keys.
"""

from __future__ import annotations

import os
from dataclasses import field, fields, make_dataclass, replace
from datetime import time
from typing import Any

from haggle_contracts.market import MarketPolicy

from .settings_table import BY_FIELD, SETTINGS, ConfigError, calling_hours

__all__ = ["ConfigError", "Settings", "parse_calling_hours"]


def parse_calling_hours(raw: str) -> tuple[time, time] | None:
    """`08:00-21:00` -> (08:00, 21:00); `any` -> None (no window)."""
    return calling_hours("CALLING_HOURS", raw)  # type: ignore[no-any-return]


def _masked(value: str) -> str:
    from .logs import mask_urls  # secrets inside URLs never reach an error message

    return mask_urls(value)


class _SettingsRules:
    """What `Settings` does beyond holding the table's fields."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, dotenv: bool = True) -> Any:
        if env is None:
            if dotenv:
                from dotenv import dotenv_values

                file_values = {k: v for k, v in dotenv_values(".env").items() if v is not None}
                env = {**file_values, **os.environ}
            else:
                env = dict(os.environ)
        values = {var.field: var.read(env) for var in SETTINGS}
        if values["public_base_url"] is None and values["domain"]:
            # The seed configured a bare host name; Twilio needs https in production.
            domain = values["domain"].removeprefix("https://").removeprefix("http://").rstrip("/")
            values["public_base_url"] = f"https://{domain}"
        public = values["public_base_url"]
        if public and public.startswith("http://") and not values["allow_insecure_public_url"]:
            # Twilio opens media streams only on wss:// (port 443): an http:// base gives a ws:// stream URL,
            # and calls would connect, stay silent and drop.
            raise ConfigError(f"PUBLIC_BASE_URL must be https:// (got {public!r}); set "
                              "ALLOW_INSECURE_PUBLIC_URL=1 only for local stand-ins on plain loopback")
        if bool(values["supabase_url"]) != bool(values["supabase_key"]):
            raise ConfigError("SUPABASE_URL and SUPABASE_KEY must be set together")
        values["callback_number"] = values["callback_number"] or values["twilio_phone_number"]
        return cls(**values)

    def with_(self, **changes: object) -> Any:
        return replace(self, **changes)  # type: ignore[type-var]

    def market_policy(self) -> MarketPolicy:
        """The job-level negotiation settings, as the market decisions take them."""
        return MarketPolicy(strategy=self.negotiation_strategy, rounds=self.negotiation_rounds,  # type: ignore[attr-defined]
                            max_concurrent_calls=self.max_concurrent_calls,  # type: ignore[attr-defined]
                            use_competing_quotes=self.use_competing_quotes)  # type: ignore[attr-defined]

    # Each service checks what it needs, so a missing key fails at start with its name.
    def _require(self, why: str, *names: str) -> None:
        for name in names:
            if not getattr(self, name):
                raise ConfigError(f"{BY_FIELD[name].env} is not set ({why})")

    def require_twilio(self) -> None:
        """What placing calls needs (the dispatcher)."""
        self._require("needed to place and verify calls", "twilio_account_sid", "twilio_auth_token",
                      "twilio_phone_number")
        self.require_public_url()

    def require_twilio_webhooks(self) -> None:
        """What verifying Twilio's webhook signatures needs (the gateway)."""
        self._require("needed to verify Twilio's webhook signatures", "twilio_account_sid", "twilio_auth_token")

    def require_public_url(self) -> None:
        if not self.public_base_url:  # type: ignore[attr-defined]
            raise ConfigError("PUBLIC_BASE_URL (or DOMAIN) is not set: Twilio needs a public URL for webhooks")

    def require_realtime(self) -> None:
        self._require("needed for the realtime voice session", "xai_api_key")

    def describe(self) -> dict[str, object]:
        """Settings safe to print: secrets show only whether they are set."""
        secret = {var.field for var in SETTINGS if var.secret}
        out: dict[str, object] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = ("set" if value else "unset") if f.name in secret else _masked(str(value))
        return out


# One frozen field per row of the table, with the row's default; secrets and password-bearing URLs stay out of
# repr. Tests build it directly (`Settings(port=0, ...)`); processes read it with `Settings.from_env()`.
Settings = make_dataclass(
    "Settings",
    [(var.field, Any, field(default=var.default, repr=not (var.secret or var.private))) for var in SETTINGS],
    bases=(_SettingsRules,),
    frozen=True,
)
Settings.__module__ = __name__
Settings.__doc__ = "Every setting of haggle/settings_table.py as one frozen value (see `from_env`)."
