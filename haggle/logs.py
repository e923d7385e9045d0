"""Structured JSON logs, one object per line, with secrets and phone numbers redacted.

Why JSON: the gateway and dispatcher run many calls at once; job and call ids as fields make one
call's story greppable. Redaction happens in the formatter so no call site can forget it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_PHONE = re.compile(r"\+\d{7,15}")
_SECRET = re.compile(r"(?i)(token|secret|api[_-]?key|authorization|password)([\"']?\s*[:=]\s*[\"']?)([^\s\"',&]+)")
_BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+")
# The userinfo of a URL (`nats://user:password@host`, `postgresql://user:password@host`, `nats://token@host`).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s'\"]+)@")


def mask_urls(text: str) -> str:
    """`text` with the password (or the token) inside every URL replaced by ****; the user name stays."""

    def mask(m: re.Match[str]) -> str:
        user, sep, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}:****@" if sep else f"{m.group(1)}****@"

    return _URL_USERINFO.sub(mask, text)


def redact(text: str) -> str:
    text = mask_urls(text)
    text = _PHONE.sub(lambda m: m.group(0)[:-4] + "****", text)
    text = _BEARER.sub("Bearer ****", text)
    return _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}****", text)


class JsonFormatter(logging.Formatter):
    FIELDS = ("job_id", "provider_id", "call_sid", "call_id", "stream_sid")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name in self.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def setup_logging(*, debug: bool = False, quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    for noisy in ("nats", "uvicorn.access", "httpx", "websockets", "twilio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
