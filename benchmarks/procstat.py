"""CPU time and memory of processes, read from /proc (psutil is not a dependency).

Why /proc: the process under test is a child whose CPU seconds must be read while it runs. Per-process times
are used for the machine's load too (their sum over the cores): they come from the scheduler's exact runtime,
while /proc/stat samples on the timer tick and under-counts event loops that wake in short bursts.
"""

from __future__ import annotations

import os
import resource

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def all_cpu_seconds() -> dict[int, float]:
    """CPU seconds of every process visible in /proc (processes may vanish while this runs)."""
    out: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            seconds = cpu_seconds(int(name))
            if seconds:
                out[int(name)] = seconds
    return out


def foreign_cpu_seconds(before: dict[int, float], after: dict[int, float], ours: set[int]) -> float:
    """CPU used between two snapshots by processes other than `ours` (a new process counts in full)."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items() if pid not in ours and v >= before.get(pid, 0.0))


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def steal_seconds() -> float:
    """CPU time the hypervisor gave to others while we wanted it, all CPUs (tick-sampled; an indicator)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    return float(parts[8]) / _TICKS if len(parts) > 8 else 0.0


def raise_fd_limit(want: int = 8192) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (e.g. `haggle up` and the nats-server it started), from /proc's children lists."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
    return out


def threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` and its descendants on `cpus` (affinity is per thread; new ones inherit it)."""
    for p in tree_pids(pid):
        for tid in threads(p):
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass  # a thread that just exited


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []
