"""The whole system under test: `haggle up` exactly as a user starts it, in a child process of its own.

It runs as `python -m benchmarks.system_entry`: `haggle.cli.main(["up"])` plus GC pause counters. One
process runs the gateway, the projector (SQLite), the dispatcher and the extractor on one Runtime, and
starts its embedded nats-server as its own child; the benchmark measures that process tree. Only the
settings differ from a user's: they point Twilio's REST API and xAI's chat API at closed loopback ports (no
dialling or extraction runs inside a measured window) and the realtime URL at the load generator.

The calls' contexts are put in the `haggle_calls` KV bucket of that tree's own NATS by the benchmark, in the
shape the dispatcher writes after a dial (token, CallSid): a real job would dial through the Twilio stand-in,
whose media client plays its own persona audio instead of the load generator's timed, numbered frames, and
the dialling happens before the window anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from haggle.nats_embedded import free_port

from . import procstat

ACCOUNT_SID = "AC" + "0" * 32
READY_PREFIX = "haggle up on http://"
LOOP_ENV = "HAGGLE_EVENT_LOOP"  # haggle.loop reads it; unset: haggle's own default


REPO = Path(__file__).resolve().parents[1]


def gc_file(data_dir: Path) -> Path:
    return data_dir / "gc-pauses.json"


def environment(data_dir: Path, realtime_url: str, loop: str | None) -> dict[str, str]:
    dead = free_port()  # nothing listens there: a stray REST call fails at once instead of leaving loopback
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "PROJECTION_URL", "SUPABASE_URL",
                                                             "SUPABASE_KEY", LOOP_ENV)}
    env.update({
        "HAGGLE_DATA_DIR": str(data_dir),
        "PORT": "0",
        "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
        "ALLOW_INSECURE_PUBLIC_URL": "1",  # plain loopback: nothing here is reachable from Twilio
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": "bench-auth-token",
        "TWILIO_PHONE_NUMBER": "+14155550100",
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{dead}",
        "XAI_API_KEY": "xai-bench",
        "XAI_REALTIME_URL": realtime_url,
        "XAI_API_BASE_URL": f"http://127.0.0.1:{dead}/v1",
        "CALLING_HOURS": "any",
        "GATEWAY_DRAIN_SECONDS": "3",
        "HAGGLE_BENCH_GC_FILE": str(gc_file(data_dir)),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    })
    if loop is not None:
        env[LOOP_ENV] = loop
    return env


async def spawn(data_dir: Path, realtime_url: str, loop: str | None, log_path: Path,
                cpus: set[int] | None) -> tuple[asyncio.subprocess.Process, int]:
    """Start `haggle up`; returns the process and its HTTP port once it serves."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    errf = await asyncio.to_thread(open, log_path, "wb")
    try:
        # cwd: the data folder, so a developer's .env in the repo does not leak into the measured settings.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.system_entry", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=errf, cwd=data_dir, env=environment(data_dir, realtime_url, loop))
    finally:
        errf.close()
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)  # before it starts nats-server and threads, which inherit it
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
    except TimeoutError:
        line = ""
    if not line.startswith(READY_PREFIX):
        await stop(proc)
        tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:]
        raise RuntimeError(f"haggle up did not start (got {line!r}); log tail:\n{tail}")
    if cpus:
        procstat.pin_tree(proc.pid, cpus)
    return proc, int(line.rsplit(":", 1)[1].split("/")[0])


def nats_url(pid: int) -> str:
    """The URL of the nats-server `haggle up` started (its `-p` argument)."""
    for child in procstat.tree_pids(pid)[1:]:
        args = procstat.cmdline(child)
        if args and Path(args[0]).name == "nats-server" and "-p" in args:
            return f"nats://127.0.0.1:{args[args.index('-p') + 1]}"
    raise RuntimeError(f"haggle up (pid {pid}) has no nats-server child")


def window_opens(proc: asyncio.subprocess.Process) -> None:
    """Restart haggle up's GC pause counters (benchmarks.system_entry)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGUSR1)


def gc_pauses(data_dir: Path) -> dict[str, object]:
    try:
        return json.loads(gc_file(data_dir).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


async def stop(proc: asyncio.subprocess.Process, timeout_s: float = 20.0) -> dict[str, object]:
    """SIGTERM, as a user's Ctrl-C or an orchestrator would; killed (with its children) if it hangs."""
    tree = procstat.tree_pids(proc.pid)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
        result: dict[str, object] = {"exit": proc.returncode}
    except TimeoutError:
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await proc.wait()
        result = {"error": f"did not stop within {timeout_s:.0f} s; killed"}
    for pid in tree[1:]:  # its nats-server, should haggle up have died without stopping it
        if Path((procstat.cmdline(pid) or [""])[0]).name == "nats-server":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
    return result
