"""Configuration: a missing or malformed setting stops the process at start with one line that names it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from haggle.config import ConfigError, Settings

HAGGLE = str(Path(sys.executable).parent / "haggle")
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "XAI_", "SUPABASE_", "NATS_"))}


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MAX_CONCURRENT_CALLS": "lots"}, "MAX_CONCURRENT_CALLS"),
        ({"CALLS_PER_SECOND": "0"}, "CALLS_PER_SECOND"),
        ({"TWILIO_PHONE_NUMBER": "555-1234"}, "TWILIO_PHONE_NUMBER"),
        ({"TWILIO_ACCOUNT_SID": "nope"}, "TWILIO_ACCOUNT_SID"),
        ({"PUBLIC_BASE_URL": "ftp://x"}, "PUBLIC_BASE_URL"),
        ({"NATS_URL": "http://x"}, "NATS_URL"),
        ({"PROJECTION_URL": "mysql://x"}, "PROJECTION_URL"),
        ({"SUPABASE_URL": "https://x.supabase.co"}, "SUPABASE_KEY"),
        ({"REALTIME_AUDIO_FORMAT": "opus"}, "REALTIME_AUDIO_FORMAT"),
        ({"AI_DISCLOSURE": "sometimes"}, "AI_DISCLOSURE"),
        ({"MAX_CALL_ATTEMPTS": "0"}, "MAX_CALL_ATTEMPTS"),
        ({"RECONCILE_SECONDS": "0.1"}, "RECONCILE_SECONDS"),
    ],
)
def test_malformed_settings_name_themselves(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_defaults_and_seed_names() -> None:
    s = Settings.from_env({"DOMAIN": "haggle.example.com", "TWILIO_ACCOUNT_SID": "AC" + "a" * 32})
    assert s.public_base_url == "https://haggle.example.com"
    assert s.realtime_voice == "Rex" and s.realtime_audio_format == "pcmu"
    assert s.twilio_api_base_url == "https://api.twilio.com"
    assert s.xai_realtime_url == "wss://api.x.ai/v1/realtime" and s.xai_api_base_url == "https://api.x.ai/v1"
    assert s.max_call_attempts == 3 and s.retry_delay_s == 600 and s.calls_per_second == 1 and s.reconcile_s == 30
    assert "set" not in str(s.describe()["twilio_account_sid"])


def test_cli_fails_at_start_with_one_line(tmp_path: Path) -> None:
    env = {**CLEAN, "NATS_URL": "nats://127.0.0.1:1", "MAX_CONCURRENT_CALLS": "many"}
    out = subprocess.run([HAGGLE, "run", "dispatcher"], env=env, capture_output=True, text=True, timeout=30,
                         cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == ["haggle: configuration error: MAX_CONCURRENT_CALLS must be a whole number (got 'many')"]


def test_dispatcher_without_twilio_names_the_missing_key(tmp_path: Path, nats_server) -> None:
    env = {**CLEAN, "NATS_URL": nats_server.url, "PORT": "0"}
    out = subprocess.run([HAGGLE, "run", "dispatcher"], env=env, capture_output=True, text=True, timeout=30,
                         cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "haggle: configuration error: TWILIO_ACCOUNT_SID is not set (needed to place and verify calls)")
