"""PUBLIC_BASE_URL must be https:// (Twilio opens media streams only over wss://): an http:// URL stops the
process at start with one line naming it, unless ALLOW_INSECURE_PUBLIC_URL=1 (the loopback stand-ins)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from haggle.config import ConfigError, Settings

HAGGLE = str(Path(sys.executable).parent / "haggle")


def test_http_public_url_is_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL must be https://"):
        Settings.from_env({"PUBLIC_BASE_URL": "http://haggle.example.com"})
    allowed = Settings.from_env({"PUBLIC_BASE_URL": "http://127.0.0.1:8000", "ALLOW_INSECURE_PUBLIC_URL": "1"})
    assert allowed.public_base_url == "http://127.0.0.1:8000" and allowed.allow_insecure_public_url
    secure = Settings.from_env({"PUBLIC_BASE_URL": "https://haggle.example.com"})
    assert secure.public_base_url == "https://haggle.example.com" and not secure.allow_insecure_public_url
    assert Settings.from_env({}).dial_retry_window_s == 600 and Settings.from_env({}).twilio_http_timeout_s == 10
    with pytest.raises(ConfigError, match="DIAL_RETRY_WINDOW_SECONDS"):
        Settings.from_env({"DIAL_RETRY_WINDOW_SECONDS": "soon"})


def test_dispatcher_with_an_http_public_url_stops_at_start_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "XAI_", "NATS_", "PUBLIC_", "ALLOW_"))}
    env.update({"NATS_URL": "nats://127.0.0.1:1", "PUBLIC_BASE_URL": "http://haggle.example.com"})
    out = subprocess.run([HAGGLE, "run", "dispatcher"], env=env, capture_output=True, text=True, timeout=30,
                         cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "haggle: configuration error: PUBLIC_BASE_URL must be https:// (got 'http://haggle.example.com'); "
        "set ALLOW_INSECURE_PUBLIC_URL=1 only for local stand-ins on plain loopback"]
