"""The gateway as it was before the performance work (issue 18), measured beside this build in `make bench`.

Absolute figures on a shared VM move with the host: the same code here has run 1.5x slower from one session to
the next (benchmarks/README.md, "The baseline build"). A claim like "twice the calls per gateway core" therefore
needs the old build measured in the same run, under the same load generator, on the same core. This module
provides that build: the commit's tree, taken out of this clone's history with `git archive`, run by this
checkout's interpreter and installed libraries with the old tree's packages first on PYTHONPATH. Only the
code differs between the two gateways, not the library versions.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

# The last build before issue 18's changes: its gateway held 150 calls on the machine the issue was filed on.
BASELINE_COMMIT = "987cbdbcee48f64d5a641673b0f583d1ee1dc539"
# Where the repository's packages live (pyproject's `packages.find.where`, the same at that commit).
SOURCE_ROOTS = (".", "contracts", "services/dispatcher", "services/media-gateway", "services/extractor",
                "services/projector", "simulators")


class BaselineUnavailable(Exception):
    """The baseline tree could not be made (no git, or a clone without that commit)."""


def extract(repo: Path, dest: Path, commit: str = BASELINE_COMMIT) -> Path:
    """`commit`'s tree under `dest` (created); the directory to run the baseline gateway in."""
    try:
        archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                                 capture_output=True, check=True, timeout=60).stdout
    except FileNotFoundError as exc:
        raise BaselineUnavailable("git is not installed") from exc
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip().splitlines()
        raise BaselineUnavailable(
            f"commit {commit} is not in this clone ({detail[-1] if detail else 'git archive failed'}); "
            "a shallow clone lacks it: `git fetch --unshallow`, or run the bench with --no-baseline") from exc
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    if not (dest / "benchmarks" / "gateway_proc.py").exists():
        raise BaselineUnavailable(f"commit {commit} has no benchmarks/gateway_proc.py to run")
    return dest


def child_env(tree: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process that must import the baseline's packages, not this checkout's: its source
    roots go ahead of the editable install's (a PYTHONPATH entry is searched before site-packages)."""
    env = dict(os.environ if base is None else base)
    roots = [str(tree / r) if r != "." else str(tree) for r in SOURCE_ROOTS]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*roots, env.get("PYTHONPATH")]))
    return env
