"""`haggle extract-price [--offline] FILE`: one JSON object per transcript, one per line.

FILE holds one transcript (a JSON list of {"role": "assistant"|"user", "text"}) or, as `.jsonl`, one
such list per line. A bad line is reported on stderr with its line number and yields an error object,
so the output keeps one line per input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from haggle.config import Settings

from .extract import extract


class TranscriptError(ValueError):
    pass


def parse_transcript(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise TranscriptError("a transcript must be a JSON list of {role, text} objects")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or turn.get("role") not in ("assistant", "user") or not isinstance(
            turn.get("text"), str
        ):
            raise TranscriptError(f"turn {i} must be {{\"role\": \"assistant\"|\"user\", \"text\": str}}")
        out.append({"role": turn["role"], "text": turn["text"]})
    return out


def read_transcripts(path: Path) -> list[tuple[int, list[dict[str, str]] | TranscriptError]]:
    text = path.read_text(encoding="utf-8")
    items: list[tuple[int, list[dict[str, str]] | TranscriptError]] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((n, parse_transcript(json.loads(line))))
            except (json.JSONDecodeError, TranscriptError) as exc:
                items.append((n, TranscriptError(str(exc))))
        return items
    try:
        items.append((1, parse_transcript(json.loads(text))))
    except (json.JSONDecodeError, TranscriptError) as exc:
        items.append((1, TranscriptError(str(exc))))
    return items


async def extract_file(path: Path, *, settings: Settings, offline: bool) -> int:
    if not path.is_file():  # a quick local stat before any work  # noqa: ASYNC240
        print(f"haggle extract-price: {path}: no such file", file=sys.stderr)
        return 2
    failures = 0
    for line_no, item in read_transcripts(path):
        if isinstance(item, TranscriptError):
            failures += 1
            print(f"haggle extract-price: {path}:{line_no}: {item}", file=sys.stderr)
            print(json.dumps({"line": line_no, "error": str(item), "agreed": None, "price": None}))
            continue
        result = await extract(
            item,
            api_key=None if offline else settings.xai_api_key,
            base_url=settings.xai_api_base_url,
            model=settings.xai_model,
        )
        print(json.dumps(msgspec.to_builtins(result)), flush=True)
    return 1 if failures else 0
