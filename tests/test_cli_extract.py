"""`haggle extract-price`: one JSON object per transcript, bad lines reported with their line number."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HAGGLE = str(Path(sys.executable).parent / "haggle")
DEAL = [{"role": "user", "text": "Hello?"}, {"role": "assistant", "text": "Hi, is this Ace Locks?"},
        {"role": "user", "text": "Yes. A lockout is a hundred and twenty five, plus a thirty dollar call-out fee."},
        {"role": "assistant", "text": "Could you do a hundred flat?"},
        {"role": "user", "text": "I can do one ten including the call-out."},
        {"role": "assistant", "text": "Deal, one ten works. Thank you, goodbye!"}]
NO_DEAL = [{"role": "user", "text": "Bob's Movers."}, {"role": "assistant", "text": "Could you move a couch for $80?"},
           {"role": "user", "text": "Minimum is two hundred, sorry, we can't go lower."},
           {"role": "assistant", "text": "I understand. Thanks for your time, goodbye!"}]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A key pointing nowhere proves --offline never calls the API.
    env = {**os.environ, "XAI_API_KEY": "unused", "XAI_API_BASE_URL": "http://127.0.0.1:9/v1"}
    return subprocess.run([HAGGLE, "extract-price", *args], capture_output=True, text=True, timeout=60, env=env,
                          cwd=cwd)


def test_single_transcript_file(tmp_path: Path) -> None:
    f = tmp_path / "call.json"
    f.write_text(json.dumps(DEAL))
    out = run("--offline", str(f), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    [line] = out.stdout.splitlines()
    result = json.loads(line)
    assert (result["agreed"], result["price"]) == (True, 110)


def test_jsonl_with_a_bad_line(tmp_path: Path) -> None:
    f = tmp_path / "calls.jsonl"
    f.write_text("\n".join([json.dumps(DEAL), "{not json", json.dumps(NO_DEAL), json.dumps([{"role": "x"}])]))
    out = run("--offline", str(f), cwd=tmp_path)
    assert out.returncode == 1
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["agreed"], r["price"]) for r in results] == [(True, 110), (None, None), (False, None), (None, None)]
    assert f"{f}:2:" in out.stderr and f"{f}:4:" in out.stderr


def test_missing_file(tmp_path: Path) -> None:
    out = run("--offline", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert out.returncode == 2 and "no such file" in out.stderr
