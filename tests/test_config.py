"""Configuration: a missing or malformed setting stops the process at start with one line that names it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from haggle_extractor.xai_chat import DEFAULT_BASE_URL, DEFAULT_MODEL
from haggle_gateway.settings import GatewaySettings

from haggle import settings_table
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


def _readme_variables() -> set[str]:
    """The variables named in the first column of the README's configuration table."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_column = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_column))
    return names


def test_readme_table_and_settings_table_name_the_same_variables() -> None:
    documented = _readme_variables()
    read = {var.env for var in settings_table.SETTINGS}
    assert documented - read == set(), "documented in the README but read by no row of haggle/settings_table.py"
    assert read - documented == set(), "read by haggle/settings_table.py but missing from the README's table"
    assert len(read) == len(settings_table.SETTINGS)  # no variable read twice


def test_service_settings_take_the_shared_defaults() -> None:
    from haggle_gateway.run import gateway_settings

    env = {"PUBLIC_BASE_URL": "https://a.b", "XAI_API_KEY": "k", "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
           "TWILIO_AUTH_TOKEN": "t"}
    shared = Settings.from_env(env, dotenv=False)
    gateway = gateway_settings(shared)
    fresh = GatewaySettings(public_base_url="https://a.b", twilio_account_sid="AC", twilio_auth_token="t")
    for name, source in (("twilio_api_base_url", "twilio_api_base_url"), ("xai_realtime_url", "xai_realtime_url"),
                         ("realtime_model", "realtime_model"), ("voice", "realtime_voice"),
                         ("audio_format", "realtime_audio_format"), ("hold_timeout_s", "hold_timeout_s")):
        assert getattr(gateway, name) == getattr(fresh, name) == getattr(shared, source), name
    assert DEFAULT_BASE_URL == shared.xai_api_base_url and DEFAULT_MODEL == shared.xai_model


def test_switches_say_which_way_they_were_meant() -> None:
    assert [settings_table.on_off("X", v) for v in ("on", "1", "Yes", "off", "0", "false")] == [
        True, True, True, False, False, False]
    with pytest.raises(ConfigError, match="X must be on or off"):
        settings_table.on_off("X", "maybe")
