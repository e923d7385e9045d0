"""`haggle extract-price [--offline] FILE`: one JSON object per transcript, one per line.

FILE holds one transcript (a JSON list of {"role": "assistant"|"user", "text"}) or, as `.jsonl`, one
such list per line. A bad line is reported on stderr with its line number and yields an error object,
so the output keeps one line per input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec

from haggle.config import Settings

from .extract import extract
from .offline import Line

_TRANSCRIPT = msgspec.json.Decoder(list[Line])


def read_transcripts(path: Path) -> list[tuple[int, list[Line] | msgspec.DecodeError]]:
    """(line number, transcript or why it is not one) for a `.json` file (one) or a `.jsonl` file (one a line)."""
    text = path.read_text(encoding="utf-8")
    lines = enumerate(text.splitlines(), start=1) if path.suffix == ".jsonl" else [(1, text)]
    items: list[tuple[int, list[Line] | msgspec.DecodeError]] = []
    for n, line in lines:
        if not line.strip() and path.suffix == ".jsonl":
            continue
        try:
            items.append((n, _TRANSCRIPT.decode(line)))
        except msgspec.DecodeError as exc:
            items.append((n, exc))
    return items


async def extract_file(path: Path, *, settings: Settings, offline: bool) -> int:
    if not path.is_file():  # a quick local stat before any work  # noqa: ASYNC240
        print(f"haggle extract-price: {path}: no such file", file=sys.stderr)
        return 2
    failures = 0
    for line_no, item in read_transcripts(path):
        if isinstance(item, msgspec.DecodeError):
            failures += 1
            why = f"a transcript must be a JSON list of {{role: assistant|user, text}}: {item}"
            print(f"haggle extract-price: {path}:{line_no}: {why}", file=sys.stderr)
            print(json.dumps({"line": line_no, "error": why, "agreed": None, "price": None}))
            continue
        result = await extract(
            item,
            api_key=None if offline else settings.xai_api_key,
            base_url=settings.xai_api_base_url,
            model=settings.xai_model,
        )
        print(json.dumps(msgspec.to_builtins(result)), flush=True)
    return 1 if failures else 0
