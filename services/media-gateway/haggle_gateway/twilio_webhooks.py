"""Twilio webhook signature checks (`X-Twilio-Signature`) over the configured public URL.

Why the configured URL: behind a proxy or tunnel the scheme, host and port the app sees are not what Twilio
signed (docs/twilio-media-streams.md, "Webhooks and signatures"). The URL is rebuilt from `PUBLIC_BASE_URL` +
the request path + the raw query string (the dispatcher's `?call_id=` is part of what Twilio signs), and every
received form parameter is included, as the SDK's RequestValidator expects (Twilio may add parameters without notice).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from .settings import GatewaySettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"


class WebhookValidator:
    """Validates one request's signature; holds the SDK validator keyed by the account Auth Token."""

    def __init__(self, settings: GatewaySettings) -> None:
        if not settings.twilio_auth_token:
            raise ValueError("TWILIO_AUTH_TOKEN is required to validate Twilio webhooks")
        self._settings = settings
        self._validator = RequestValidator(settings.twilio_auth_token)

    def url_for(self, path: str, query: str) -> str:
        return self._settings.public_url(path, query)

    def is_valid(self, path: str, query: str, params: Mapping[str, str] | object, signature: str | None) -> bool:
        """True when `signature` matches the public URL and all params. `params` may be a multi-dict (form)."""
        if not signature:
            return False
        url = self.url_for(path, query)
        try:
            return bool(self._validator.validate(url, params, signature))
        except Exception:  # a malformed signature or params must read as "invalid", never as a 500
            log.warning("signature check raised for %s", path, exc_info=True)
            return False

    def stream_signature_ok(self, signature: str | None) -> bool | None:
        """The optional `x-twilio-signature` on the media-stream upgrade, over the ws(s) stream URL with no
        params (docs/twilio-media-streams.md, "Webhooks and signatures"). None when absent. Advisory only: the
        single-use token is the real gate."""
        if not signature:
            return None
        return bool(self._validator.validate(self._settings.stream_url, {}, signature))

    def sign(self, path: str, query: str, params: Mapping[str, str]) -> str:
        """The signature Twilio would send (for tests and local tools that play Twilio)."""
        return str(self._validator.compute_signature(self.url_for(path, query), dict(params)))
