"""Before/after in one bench session: another checkout and this one, alternating, under the same load generator.

    git worktree add --detach ../base main && (cd ../base && make install)
    python -m benchmarks.compare_builds --base ../base [--rounds 4] [--duration 20] [--calls 100]
    python -m benchmarks.compare_builds --base ../base --target gateway --calls 150,200,250,300 [--rounds 2]

`--target system` (the default): `haggle up` whole, each pair followed by the relay. `--target gateway`: the
gateway alone on its own core, as `make bench`'s sweep runs it, at each N in turn; this is how "more calls per
core than build X" is measured on a machine whose speed differs from the one a figure was taken on.

On a machine shared with other work, absolute figures swing by tens of percent from one minute to the next; two
builds measured in separate runs cannot be told apart by a few percent. Here both run back to back under the same
load generator, the order swapped every round, and each round's own ratios are printed. For `system` the other
checkout runs with its own venv (`<base>/.venv/bin/python`) and its own sources on PYTHONPATH; for `gateway` it
runs as `make bench` runs its baseline build (benchmarks/baseline_build.py): its sources on this checkout's
interpreter and libraries, so it needs no venv and only the code differs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import gateway_bench as gb
from . import system_proc


def _order(round_: int) -> list[str]:
    return ["before", "after"] if round_ % 2 == 0 else ["after", "before"]


async def _as_build(bench: gb.Bench, build: tuple[str, Path], step: gb.Step) -> dict[str, Any]:
    """A system `step` measured on `build` (interpreter, checkout): `system_proc.spawn` starts `sys.executable` with
    its REPO on PYTHONPATH, so for the step both point at the build, whose venv has its own packages."""
    saved = sys.executable, system_proc.REPO
    sys.executable, system_proc.REPO = build
    try:
        return await bench.run(step)
    finally:
        sys.executable, system_proc.REPO = saved


async def compare_gateways(base: Path, rounds: int, duration_s: float, calls: list[int]) -> list[dict[str, Any]]:
    """The gateway alone, before (the other checkout, as the bench's `baseline` target) and after, alternating at
    each N (the order swapped every round)."""
    targets = {"before": "baseline", "after": "gateway"}
    results: list[dict[str, Any]] = []
    async with gb.Bench(Path(tempfile.mkdtemp(prefix="haggle-compare-")), baseline=base) as bench:
        for n in calls:
            for i in range(rounds):
                row: dict[str, Any] = {"calls": n}
                for name in _order(i):
                    row[name] = await bench.run(gb.Step(target=targets[name], calls=n, duration_s=duration_s,
                                                        loop="uvloop"))
                    print(f"{name:6}", gb.describe(row[name]), flush=True)
                cpu = {k: row[k]["cpu_s_per_call_min"] for k in ("before", "after")}
                print(f"N={n} round {i + 1}: CPU s per call-min before {cpu['before']} after {cpu['after']} "
                      f"(after/before {cpu['after'] / cpu['before']:.3f}); holds before "
                      f"{row['before']['ok']} after {row['after']['ok']}"
                      + ("" if not any(gb.disturbed(row[k]) for k in ("before", "after")) else " (disturbed)"),
                      flush=True)
                results.append(row)
    return results


async def compare(base: Path, rounds: int, duration_s: float, calls: int) -> list[dict[str, Any]]:
    builds = {"before": (str(base / ".venv" / "bin" / "python"), base),
              "after": (sys.executable, system_proc.REPO)}
    results: list[dict[str, Any]] = []
    async with gb.Bench(Path(tempfile.mkdtemp(prefix="haggle-compare-"))) as bench:
        for i in range(rounds):
            row: dict[str, Any] = {}
            for name in _order(i):
                step = gb.Step(target="system", calls=calls, duration_s=duration_s, loop="uvloop")
                row[name] = await _as_build(bench, builds[name], step)
                print(f"{name:6}", gb.describe(row[name]), flush=True)
            row["relay"] = await bench.run(gb.Step(target="relay", calls=calls, duration_s=duration_s, loop="uvloop"))
            print("relay ", gb.describe(row["relay"]), flush=True)
            cpu = {k: r["cpu_s_per_call_min"] for k, r in row.items()}
            print(f"round {i + 1}: CPU s per call-min before {cpu['before']} after {cpu['after']} "
                  f"relay {cpu['relay']}; after/before {cpu['after'] / cpu['before']:.3f}, "
                  f"before/relay {cpu['before'] / cpu['relay']:.3f}, "
                  f"after/relay {cpu['after'] / cpu['relay']:.3f}; other processes "
                  + " / ".join(f"{row[k]['foreign_cpu_share']:.0%}" for k in ("before", "after", "relay"))
                  + ("" if not any(gb.disturbed(r) for r in row.values()) else " (disturbed)"), flush=True)
            results.append(row)
    return results


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, required=True,
                   help="the other checkout (with its .venv for --target system)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--target", choices=("system", "gateway"), default="system")
    p.add_argument("--calls", default="100", help="N (system); comma-separated N in turn (gateway)")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "haggle-compare-builds.json")
    args = p.parse_args()
    if args.target == "system" and not (args.base / ".venv" / "bin" / "python").exists():
        p.error(f"{args.base}/.venv/bin/python not found: run `make install` there first")
    if args.target == "system" and not (args.base / "benchmarks" / "system_entry.py").exists():
        p.error(f"{args.base} predates the whole-system step (no benchmarks/system_entry.py): "
                "compare it with --target gateway")
    if args.target == "gateway" and not (args.base / "benchmarks" / "gateway_proc.py").exists():
        p.error(f"{args.base} has no benchmarks/gateway_proc.py to run")
    calls = [int(n) for n in args.calls.split(",")]
    if args.target == "gateway":
        results = asyncio.run(compare_gateways(args.base.resolve(), args.rounds, args.duration, calls))
    else:
        results = asyncio.run(compare(args.base.resolve(), args.rounds, args.duration, calls[0]))
    args.out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    cli()
