"""The benchmark's baseline build: the gateway of an older commit, taken from this clone's history and run with this
checkout's interpreter and libraries beside the current one. No figure is asserted (those are `make bench`'s); what
is tested is that the old code is what runs, that a clone without the commit says so, and how the report reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# `benchmarks` is a folder of the repository, not an installed package (make bench runs it from the root).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import baseline_build, report
from benchmarks.gateway_bench import REPO, Bench, Step, parse_args

pytestmark = pytest.mark.timeout(120)


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30,
                          env=env).stdout.strip()


def _old_repo(root: Path) -> tuple[Path, str]:
    """A repository whose one commit has a `haggle_gateway` package that says where it was imported from."""
    repo = root / "old"
    pkg = repo / "services" / "media-gateway" / "haggle_gateway"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("OLD = True\n")
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "gateway_proc.py").write_text("")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "old")
    return repo, _git(repo, "rev-parse", "HEAD")


def test_the_baseline_tree_is_imported_ahead_of_this_checkouts_install(tmp_path: Path) -> None:
    repo, commit = _old_repo(tmp_path)
    tree = baseline_build.extract(repo, tmp_path / "tree", commit)
    assert (tree / "services" / "media-gateway" / "haggle_gateway" / "__init__.py").read_text() == "OLD = True\n"
    probe = "import haggle_gateway, haggle_contracts; print(haggle_gateway.OLD, haggle_contracts.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], env=baseline_build.child_env(tree), cwd=tree,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    old, contracts = out.stdout.split()
    # The old tree's package wins over the editable install; what the old tree lacks still comes from this one.
    assert old == "True" and Path(contracts).is_relative_to(REPO)


def test_a_clone_without_the_commit_says_so(tmp_path: Path) -> None:
    repo, _ = _old_repo(tmp_path)
    with pytest.raises(baseline_build.BaselineUnavailable, match=r"not in this clone.*--no-baseline"):
        baseline_build.extract(repo, tmp_path / "tree", "0" * 40)
    assert not (tmp_path / "tree").exists()  # nothing half-made


def test_the_baseline_runs_beside_the_gateway_unless_asked_not_to() -> None:
    assert parse_args([]).targets == ["gateway", "baseline", "relay", "system"]
    assert parse_args(["--targets", "gateway,relay"]).targets == ["gateway", "baseline", "relay"]
    assert parse_args(["--targets", "gateway", "--no-baseline"]).targets == ["gateway"]
    assert parse_args(["--quick"]).targets == ["gateway", "relay", "system"]  # a smoke run stays short
    assert parse_args(["--targets", "relay"]).targets == ["relay"]


def _step(target: str, calls: int, ok: bool, cpu: float) -> dict[str, object]:
    return {"target": target, "calls": calls, "ok": ok, "audio_format": "pcmu", "cpu_s_per_call_min": cpu}


def test_the_report_compares_calls_held_and_cpu_where_both_held() -> None:
    steps = [_step("gateway", 50, True, 0.25), _step("gateway", 100, True, 0.21), _step("gateway", 200, True, 0.2),
             _step("gateway", 300, False, 0.19), _step("baseline", 50, True, 0.5), _step("baseline", 100, False, 0.5)]
    results = {"config": {"baseline_commit": "987cbdbcee48"}, "steps": steps,
               "saturation": {"gateway": {"holds_up_to": 200, "breaks_at": 300},
                              "baseline": {"holds_up_to": 50, "breaks_at": 100}}}
    [line] = report.baseline_lines(results)
    assert "`987cbdb`" in line and "this build holds 200 calls per core, the baseline 50: 4.00x" in line
    assert "at 50 calls, CPU per call-minute 0.250 against 0.500 (0.50x)" in line
    results["saturation"]["baseline"] = {"holds_up_to": None, "breaks_at": 50}
    assert "the baseline held none of its steps (it broke at 50 calls); this build held 200" in \
        report.baseline_lines(results)[0]
    del results["saturation"]["baseline"]
    assert report.baseline_lines(results) == []


@pytest.mark.slow
async def test_the_baseline_gateway_streams_in_the_bench(tmp_path: Path) -> None:
    try:
        tree = baseline_build.extract(REPO, tmp_path / "baseline")
    except baseline_build.BaselineUnavailable as exc:
        pytest.skip(f"this clone cannot make the baseline: {exc}")  # a shallow clone; make bench says the same
    async with Bench(tmp_path, pin=False, quiet_wait_s=0.0, baseline=tree) as bench:
        step = await bench.run(Step(target="baseline", calls=2, duration_s=1.5, warmup_s=0.5, loop="asyncio"))
    assert step["errors"] == [], step.get("log_tail")
    assert step["connected"] == step["streaming"] == 2
    assert step["in_frames"] >= 100 and step["out_frames"] >= 100  # 2 calls x 50 frames/s x 1.5 s each way
    assert step["cpu_s_per_call_min"] > 0
