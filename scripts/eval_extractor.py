"""Score the offline price extractor on the labelled CraigslistBargains dialogues.

The data stays where it is (../shared/eval by default): its terms allow evaluation only, so nothing from it
is copied into the repository. Buyer turns become `assistant` (our agent), seller turns `user` (the provider).

    python scripts/eval_extractor.py [--eval-dir DIR] [--json] [--errors N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from haggle_extractor.offline import extract_offline

logger = logging.getLogger("eval_extractor")

EVAL_FILES = ("craigslist_eval_clean.jsonl", "craigslist_eval.jsonl")
_ROLES = {"buyer": "assistant", "seller": "user"}
_EXACT = 0.005
_NUMBER_RE = re.compile(r"\d[\d,]*(?:\.\d+)?")


def default_eval_dir() -> Path:
    """`HAGGLE_EVAL_DIR`, else `<repo>/../shared/eval`."""
    env = os.environ.get("HAGGLE_EVAL_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "eval"


def to_transcript(turns: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": _ROLES[t["role"]], "text": t["text"]} for t in turns]


def last_number(transcript: list[dict[str, str]]) -> float | None:
    """The baseline: the last number anyone typed, whatever it is."""
    values = [float(v.replace(",", "")) for t in transcript for v in _NUMBER_RE.findall(t["text"])]
    return values[-1] if values else None


def _load(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc}") from exc
    return rows


def score(path: Path | str, *, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Accuracy of agreed/not over all dialogues and of the exact price over the agreed ones."""
    path = Path(path)
    rows = _load(path)
    agreed_right = 0
    n_agreed = 0
    price_right = 0
    baseline_right = 0
    for row in rows:
        transcript = to_transcript(row["turns"])
        truth = row["outcome"]
        got = extract_offline(transcript)
        ok_agreed = got.agreed == bool(truth["agreed"])
        agreed_right += ok_agreed
        ok_price = True
        if truth["agreed"]:
            n_agreed += 1
            want = float(truth["price"])
            ok_price = got.price is not None and abs(got.price - want) <= _EXACT
            price_right += ok_price
            base = last_number(transcript)
            baseline_right += base is not None and abs(base - want) <= _EXACT
        if errors is not None and not (ok_agreed and ok_price):
            # Ids only: the dialogues stay in the eval file (their terms allow evaluation, not republishing).
            errors.append({"id": row["id"], "truth": truth, "got": {"agreed": got.agreed, "price": got.price}})
    total = len(rows)
    return {
        "file": path.name,
        "dialogues": total,
        "agreed_dialogues": n_agreed,
        "agreed_accuracy": agreed_right / total if total else 0.0,
        "exact_price_accuracy": price_right / n_agreed if n_agreed else 0.0,
        "baseline_last_number_accuracy": baseline_right / n_agreed if n_agreed else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", type=Path, default=None, help="default: $HAGGLE_EVAL_DIR or ../shared/eval")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--errors", type=int, default=0, help="print the ids of up to N misread dialogues")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    eval_dir = args.eval_dir or default_eval_dir()
    paths = [eval_dir / name for name in EVAL_FILES]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        logger.error("eval data not found: %s", ", ".join(str(p) for p in missing))
        return 2
    results = {}
    for path in paths:
        errs: list[dict[str, Any]] = []
        results[path.name] = score(path, errors=errs if args.errors else None)
        for err in errs[: args.errors]:
            print(json.dumps({"file": path.name, **err}))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for res in results.values():
        print(f"{res['file']}: {res['dialogues']} dialogues, {res['agreed_dialogues']} agreed")
        print(f"  agreed/not accuracy (all dialogues):   {res['agreed_accuracy']:.1%}")
        print(f"  exact price (agreed dialogues):        {res['exact_price_accuracy']:.1%}")
        print(f"  baseline 'last number mentioned':      {res['baseline_last_number_accuracy']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
