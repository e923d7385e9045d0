"""Gateway benchmark: N concurrent simulated calls through the media gateway and through a bare relay.

    python -m benchmarks.gateway_bench [--calls 25,50,100,200] [--duration 20] [--quick] [--loop asyncio]

For each N, the gateway (benchmarks.gateway_proc), the gateway of the build before issue 18 (the baseline,
benchmarks/baseline_build.py, until it breaks) and the floor (benchmarks.relay) each run alone in a fresh
child process while this process plays Twilio and the realtime model for N calls (benchmarks.loadgen). After
every call streams and a warm-up, a window of `--duration` seconds is measured: forwarding latency each way
(p50/p99), frames lost, the child's CPU seconds per call-minute (from /proc), its memory per call (RSS growth
over its idle RSS, divided by N), the load generator's CPU and the whole machine's busy share. Then the
pcm24k mode at one N, the event path (UtteranceTranscribed -> projection row), and a saturation search
between the last N that held and the first that did not.

Outputs: benchmarks/results/latest.json, benchmarks/results/README-table.md and docs/bench.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from haggle_contracts import subjects
from haggle_contracts.calls import CallContext, ctx_key, encode_context

from haggle import bus
from haggle.loop import factory as loop_factory
from haggle.loop import uvloop_available
from haggle.nats_embedded import EmbeddedNats

from . import baseline_build, event_path, procstat, report, system_proc
from .loadgen import CALLER_AUDIO, CallSpec, LoadGenerator, business_name, make_call_id
from .serve import GcPauses
from .stats import percentile, rounded

log = logging.getLogger("benchmarks")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PLOT = REPO / "docs" / "bench.png"
LATENCY_BUDGET_MS = 20.0


@dataclass(frozen=True)
class Step:
    # "gateway" | "relay" | "system" (`haggle up`: the process and its nats-server child) | "baseline" (the
    # gateway of the build before issue 18, benchmarks/baseline_build.py)
    target: str
    calls: int
    duration_s: float
    audio_format: str = "pcmu"
    chunk_ms: int = 20
    loop: str = "asyncio"
    warmup_s: float = 2.0
    experiments: tuple[str, ...] = ()
    caller_audio: str = "silence"  # what the callees send after each frame's id (loadgen.CALLER_AUDIO)


@dataclass
class Subject:
    """A started process under test. For `system` the measured process tree is it and its descendants."""

    proc: asyncio.subprocess.Process
    port: int
    log_path: Path
    tree: bool = False
    kv: Any = None  # where the calls' contexts go (None: the bench's own NATS)
    nc: Any = None

    def pids(self) -> list[int]:
        return procstat.tree_pids(self.proc.pid) if self.tree else [self.proc.pid]

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds of the main process and of its descendants."""
        pids = self.pids()
        return procstat.cpu_seconds(pids[0]), sum(procstat.cpu_seconds(p) for p in pids[1:])

    def rss_bytes(self) -> int:
        return sum(procstat.rss_bytes(p) for p in self.pids())


class Bench:
    """The shared world of a run: one nats-server, one load generator, a log folder."""

    def __init__(self, work: Path, *, profile: Path | None = None, pin: bool = True,
                 quiet_wait_s: float = 15.0, baseline: Path | None = None) -> None:
        self.work = work
        self.baseline = baseline  # the baseline build's tree, for "baseline" steps
        self.profile = profile
        self.quiet_wait_s = quiet_wait_s
        # The process under test gets a core of its own; this process and nats-server share the other. Left to
        # the scheduler, placement changes between runs and with it who is charged for loopback delivery.
        cpus = sorted(os.sched_getaffinity(0))
        self.pin: tuple[int, int] | None = (cpus[0], cpus[1]) if pin and len(cpus) >= 2 else None
        self.nats: EmbeddedNats | None = None
        self.nc: Any = None
        self.kv: Any = None
        self.gen = LoadGenerator()
        self.pauses = GcPauses()
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.py_spy = spy if Path(spy).exists() else None

    async def __aenter__(self) -> Bench:
        if self.pin:
            os.sched_setaffinity(0, {self.pin[0]})  # nats-server, started next, inherits it
        self.nats = EmbeddedNats(self.work / "nats").start()
        self.nc = await bus.connect(self.nats.url, name="bench-loadgen")
        js = self.nc.jetstream()
        await bus.ensure_topology(js)
        self.kv = await js.key_value(subjects.KV_CALLS)
        await self.gen.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.gen.stop()
        with contextlib.suppress(Exception):
            await self.nc.close()
        if self.nats is not None:
            self.nats.stop()

    async def _spawn(self, step: Step) -> Subject:
        assert self.nats is not None
        log_path = self.work / f"{step.target}-{step.calls}-{step.audio_format}-{secrets.token_hex(2)}.log"
        if step.target == "system":
            return await self._spawn_system(step, log_path)
        cwd, env = REPO, None
        if step.target in ("gateway", "baseline"):
            cmd = [sys.executable, "-m", "benchmarks.gateway_proc", "--nats", self.nats.url,
                   "--chunk-ms", str(step.chunk_ms)]
            for name in step.experiments:
                cmd += ["--experiment", name]
            if step.target == "baseline":
                if self.baseline is None:
                    raise RuntimeError("a baseline step needs Bench(baseline=<tree>)")
                # The old tree's gateway_proc and packages, this checkout's interpreter and libraries.
                cwd, env = self.baseline, baseline_build.child_env(self.baseline)
        else:
            cmd = [sys.executable, "-m", "benchmarks.relay"]
        cmd += ["--realtime-url", self.gen.realtime_url, "--audio-format", step.audio_format, "--loop", step.loop]
        errf = await asyncio.to_thread(open, log_path, "wb")
        try:
            proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                        stderr=errf, cwd=cwd, env=env)
        finally:
            errf.close()  # the child has its own copy
        assert proc.stdout is not None
        if self.pin:
            os.sched_setaffinity(proc.pid, {self.pin[1]})
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        except TimeoutError:
            line = ""
        if not line.startswith("READY "):
            proc.kill()
            await proc.wait()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{step.target} did not start (got {line!r}); log tail:\n{tail}")
        return Subject(proc=proc, port=int(line.split()[1]), log_path=log_path)

    async def _spawn_system(self, step: Step, log_path: Path) -> Subject:
        if step.audio_format != "pcmu" or step.chunk_ms != 20 or step.experiments:
            raise ValueError("the system step runs haggle up's own settings (pcmu, outbound_chunk_ms=20)")
        cpus = {self.pin[1]} if self.pin else None
        proc, port = await system_proc.spawn(log_path.with_suffix(""), self.gen.realtime_url, step.loop, log_path,
                                             cpus)
        subject = Subject(proc=proc, port=port, log_path=log_path, tree=True)
        try:
            subject.nc = await bus.connect(system_proc.nats_url(proc.pid), name="bench-contexts")
            subject.kv = await subject.nc.jetstream().key_value(subjects.KV_CALLS)
        except Exception:
            await system_proc.stop(proc)
            raise
        return subject

    async def _stop_subject(self, subject: Subject) -> dict[str, Any]:
        if subject.nc is not None:
            with contextlib.suppress(Exception):
                await subject.nc.close()
        if subject.tree:
            stats = await system_proc.stop(subject.proc)
            return {**stats, "gc": system_proc.gc_pauses(subject.log_path.with_suffix(""))}
        return await self._stop(subject.proc)

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        try:
            out = await asyncio.wait_for(proc.stdout.read(), 20)
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"error": "did not stop within 20 s; killed"}
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("STATS "):
                return json.loads(line[6:])  # type: ignore[no-any-return]
        return {}

    async def _contexts(self, n: int, kv: Any) -> list[CallSpec]:
        specs = []
        for i in range(n):
            spec = CallSpec(index=i, call_id=make_call_id(i, secrets.token_hex(4)), token=secrets.token_urlsafe(24),
                            call_sid=f"CA{secrets.token_hex(16)}", stream_sid=f"MZ{secrets.token_hex(16)}")
            ctx = CallContext(call_id=spec.call_id, job_id="benchjob", provider_id=f"p{i}", attempt=1,
                              service_provider=business_name(i), phone_number="+14155550100",
                              problem="leaking kitchen faucet", zip_code="94110", max_price=180.0,
                              token=spec.token, call_sid=spec.call_sid)
            await kv.put(ctx_key(spec.call_id), encode_context(ctx))
            specs.append(spec)
        return specs

    async def quiet(self, limit: float = 0.10, wait_s: float = 15.0) -> float:
        """Wait (bounded) until other processes use under `limit` of the machine for a second; returns the last
        share seen. The machine may be shared (other test runs), and their load is not the gateway's."""
        assert self.nats is not None and self.nats.proc is not None
        ours = {os.getpid(), self.nats.proc.pid}
        deadline = time.monotonic() + wait_s
        share = 0.0
        while True:
            before = await asyncio.to_thread(procstat.all_cpu_seconds)
            await asyncio.sleep(1.0)  # a one-second sample of everyone else's CPU use
            after = await asyncio.to_thread(procstat.all_cpu_seconds)
            share = procstat.foreign_cpu_seconds(before, after, ours) / (os.cpu_count() or 1)
            if share < limit or time.monotonic() > deadline:
                return share

    async def run(self, step: Step) -> dict[str, Any]:
        gen = self.gen
        quiet_before = await self.quiet(wait_s=self.quiet_wait_s)
        gen.reset()
        gen.audio_format = step.audio_format
        gen.embedded_ids = step.audio_format == "pcmu"
        gen.set_caller_audio(step.caller_audio)
        subject = await self._spawn(step)
        proc, port, log_path = subject.proc, subject.port, subject.log_path
        pid = proc.pid
        errors: list[str] = []
        profiler: asyncio.subprocess.Process | None = None
        try:
            await asyncio.sleep(0.5)  # let the fresh process settle before its idle RSS is read
            rss_idle = subject.rss_bytes()
            specs = await self._contexts(step.calls, subject.kv or self.kv)
            t_setup = time.perf_counter()
            await gen.open_calls(specs, port)
            if not await gen.wait_streaming(step.calls, 30 + step.calls * 0.1):
                errors.append(f"only {gen.counters.model_streaming}/{step.calls} sessions streaming")
            setup_s = time.perf_counter() - t_setup
            await asyncio.sleep(step.warmup_s)  # frames queued while calls were being accepted drain first
            in0, out0, lag0 = gen.inbound.next_id, gen.outbound.next_id, len(gen.tick_lag)
            assert self.nats is not None and self.nats.proc is not None
            nats_pid = self.nats.proc.pid
            if proc.stdin is not None:
                proc.stdin.write(b"window\n")
            elif subject.tree:
                system_proc.window_opens(proc)
            self.pauses.reset()
            everyone0 = await asyncio.to_thread(procstat.all_cpu_seconds)
            (c0, k0), s0, n0, st0, t0 = (subject.cpu_seconds(), procstat.self_cpu_seconds(),
                                         procstat.cpu_seconds(nats_pid), procstat.steal_seconds(), time.perf_counter())
            if self.profile is not None and self.py_spy is not None:
                name = f"{step.target}-{step.calls}-{step.audio_format}-{step.loop}-{int(time.time())}"
                out = self.profile / f"{name}.txt"
                profiler = await asyncio.create_subprocess_exec(
                    self.py_spy, "record", "--pid", str(pid), "--duration", str(int(step.duration_s)),
                    "--rate", "250", "--format", "raw", "--nonblocking", "-o", str(out),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rss_peak = 0
            end = t0 + step.duration_s
            while (left := end - time.perf_counter()) > 0:
                await asyncio.sleep(min(1.0, left))  # sampling RSS once a second through the window
                rss_peak = max(rss_peak, subject.rss_bytes())
            (c1, k1), s1, n1, st1, t1 = (subject.cpu_seconds(), procstat.self_cpu_seconds(),
                                         procstat.cpu_seconds(nats_pid), procstat.steal_seconds(), time.perf_counter())
            everyone1 = await asyncio.to_thread(procstat.all_cpu_seconds)
            measured = subject.pids()
            ours = {*measured, os.getpid(), nats_pid}
            if profiler is not None:
                ours.add(profiler.pid)
            in1, out1, lag1 = gen.inbound.next_id, gen.outbound.next_id, len(gen.tick_lag)
            await asyncio.sleep(1.0)  # frames sent at the end of the window are still in flight
            gen.sending = False
            await asyncio.sleep(0.5)
            in_frame, in_fwd, in_lost = gen.inbound.window(in0, in1)
            out_frame, out_fwd, out_lost = gen.outbound.window(out0, out1)
            counters = gen.counters
            await gen.hang_up_all()
        finally:
            if profiler is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(profiler.wait(), 10)
            child_stats = await self._stop_subject(subject)
        window = t1 - t0
        kids = k1 - k0  # the system's nats-server (0 for the single-process targets)
        cpu = c1 - c0 + kids
        errors += counters.connect_errors[:5]
        lag = sorted(gen.tick_lag[lag0:lag1])
        result = {
            **asdict(step),
            "connected": counters.twilio_connected,
            "streaming": counters.model_streaming,
            "setup_s": round(setup_s, 2),
            "window_s": round(window, 2),
            "in_frames": len(in_frame) + in_lost,
            "out_frames": len(out_frame) + out_lost,
            "in_lost": in_lost,
            "out_lost": out_lost,
            "in_p50_ms": rounded(percentile(in_fwd, 0.50)),
            "in_p99_ms": rounded(percentile(in_fwd, 0.99)),
            "in_max_ms": rounded(in_fwd[-1] if in_fwd else None),
            "out_p50_ms": rounded(percentile(out_fwd, 0.50)),
            "out_p99_ms": rounded(percentile(out_fwd, 0.99)),
            "out_max_ms": rounded(out_fwd[-1] if out_fwd else None),
            # Per frame including a deliberate coalescing hold (equal to the above with 20 ms chunks).
            "out_frame_p50_ms": rounded(percentile(out_frame, 0.50)),
            "out_frame_p99_ms": rounded(percentile(out_frame, 0.99)),
            "cpu_s": round(cpu, 3),
            "cpu_share": round(cpu / window, 3),  # of one core (the whole tree for `system`)
            "children_cpu_share": round(kids / window, 3),
            "processes": len(measured),  # 2 for `system`: haggle up and its nats-server
            "cpu_s_per_call_min": round(cpu / (step.calls * window / 60.0), 4),
            "rss_idle_mb": round(rss_idle / 2**20, 1),
            "rss_mb": round(rss_peak / 2**20, 1),
            "rss_per_call_kb": round(max(0, rss_peak - rss_idle) / 1024 / step.calls, 1),
            "loadgen_cpu_share": round((s1 - s0) / window, 3),
            "nats_cpu_share": round((n1 - n0) / window, 3),
            # Process times are exact (scheduler runtime); /proc/stat's tick sampling misses short bursts.
            "machine_busy": round((cpu + (s1 - s0) + (n1 - n0)) / (window * (os.cpu_count() or 1)), 3),
            "steal_share": round((st1 - st0) / (window * (os.cpu_count() or 1)), 3),
            # Other processes on the machine during the window (a shared machine disturbs the figures).
            "foreign_cpu_share": round(procstat.foreign_cpu_seconds(everyone0, everyone1, ours)
                                       / (window * (os.cpu_count() or 1)), 3),
            "foreign_before_share": round(quiet_before, 3),
            "tick_lag_p99_ms": rounded(percentile(lag, 0.99)),
            "marks_echoed": counters.marks_echoed,
            "strays": gen.inbound.strays + gen.outbound.strays,
            "duplicates": gen.inbound.duplicates + gen.outbound.duplicates,
            "child": child_stats,
            "loadgen_gc": self.pauses.summary(),
            "errors": errors,
        }
        result["ok"] = holds(result)
        if errors or child_stats.get("error"):
            result["log_tail"] = log_path.read_text(errors="replace")[-3000:]
        return result


def disturbed(r: dict[str, Any]) -> bool:
    """The window says more about the machine than about the process: others used >= 10% of it, or the load
    generator itself fell behind its 2 ms schedule (p99 lag > 5 ms) while the process under test had CPU to
    spare. Such a step is measured again (`--retries`)."""
    lagging = (r["tick_lag_p99_ms"] or 0.0) > 5.0 and r["cpu_share"] < 0.95
    return r["foreign_cpu_share"] >= 0.10 or lagging


def holds(r: dict[str, Any]) -> bool:
    """No frame lost, every call up, p99 under the budget both ways."""
    p99s = (r.get("in_p99_ms"), r.get("out_p99_ms"))
    return (not r["errors"] and r["connected"] == r["calls"] and r["streaming"] == r["calls"]
            and r["in_lost"] == 0 and r["out_lost"] == 0
            and all(p is not None and p < LATENCY_BUDGET_MS for p in p99s))


def describe(r: dict[str, Any]) -> str:
    gc_max = r["child"].get("gc", {}).get("max_ms")
    return (f"{r['target']:<7} {r['audio_format']:<6} {r['loop']:<7} chunk {r['chunk_ms']} N={r['calls']:<4} "
            f"callers {r.get('caller_audio', 'silence')} "
            f"in p50/p99 {r['in_p50_ms']}/{r['in_p99_ms']} out p50/p99 {r['out_p50_ms']}/{r['out_p99_ms']} ms "
            f"(per frame {r['out_frame_p99_ms']}), lost {r['in_lost']}/{r['out_lost']}, "
            f"CPU {r['cpu_s_per_call_min']} s/call-min ({r['cpu_share']:.0%} core), "
            f"RSS {r['rss_per_call_kb']} KiB/call, machine {r['machine_busy']:.0%} (steal {r['steal_share']:.0%}), "
            f"loadgen {r['loadgen_cpu_share']:.0%} (tick lag p99 {r['tick_lag_p99_ms']} ms), gc max {gc_max} ms, "
            f"other processes {r['foreign_cpu_share']:.0%}: "
            f"{'holds' if r['ok'] else 'BREAKS'}")


async def sweep(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    started = time.time()
    base = {"duration_s": args.duration, "chunk_ms": args.chunk_ms, "loop": args.loop, "warmup_s": args.warmup,
            "experiments": tuple(args.experiment), "caller_audio": args.caller_audio}
    baseline = None
    if "baseline" in args.targets:
        try:
            baseline = baseline_build.extract(REPO, work / "baseline", args.baseline_commit)
        except baseline_build.BaselineUnavailable as exc:
            print(f"baseline build skipped: {exc}", flush=True)
            args.targets.remove("baseline")
    async with Bench(work, profile=args.profile, pin=args.pin, quiet_wait_s=args.quiet_wait,
                     baseline=baseline) as bench:

        async def run(step: Step) -> dict[str, Any]:
            tries: list[dict[str, Any]] = []
            for _ in range(1 + args.retries):
                result = await bench.run(step)
                print(describe(result), flush=True)
                tries.append(result)
                if not disturbed(result):
                    break
                print("  ^ disturbed by other processes or a stalled load generator: measuring again", flush=True)
            best = min(tries, key=lambda r: (disturbed(r), r["foreign_cpu_share"]))
            best["attempts"] = len(tries)
            steps.append(best)
            return best

        for n in args.calls:
            for target in args.targets:
                if target == "system":
                    continue
                if target == "baseline" and any(s["target"] == "baseline" and not s["ok"] for s in steps):
                    continue  # the old build broke at a smaller N: more calls would only pile up
                await run(step_for(target, n, base))
        system = []
        if "system" in args.targets:
            for n in args.system_calls:
                # The relay right after the system, on the loop haggle up ran on: each pair compares the two
                # under the same machine load, a minute apart. On a shared machine one pair can still land on
                # a burst of someone else's work, so the pair is repeated and the report takes medians.
                for round_ in range(args.system_repeat):
                    pair = {"round": round_,
                            "system": await run(Step(target="system", calls=n, **{**base, "loop": args.system_loop})),
                            "relay": await run(Step(target="relay", calls=n, **{**base, "loop": args.system_loop}))}
                    steps.remove(pair["system"])
                    steps.remove(pair["relay"])
                    system.append(pair)
        saturation = await refine(run, steps, args, base)
        pcm24k: dict[str, Any] | None = None
        if args.pcm24k_calls:
            pcm24k = await run(Step(target="gateway", calls=args.pcm24k_calls, audio_format="pcm24k", **base))
            steps.remove(pcm24k)
        variants = []
        for step in variant_steps(args, base):
            result = await run(step)
            steps.remove(result)
            variants.append(result)
    events = None
    if args.event_calls:
        events = await event_path.measure(work / "events", calls=args.event_calls, duration_s=args.duration,
                                          interval_s=args.utterance_interval)
        print(f"event path: {events}", flush=True)
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "steps": steps,
        "saturation": saturation,
        "pcm24k": pcm24k,
        "variants": variants,
        "event_path": events,
        "system": system,
    }


def step_for(target: str, calls: int, base: dict[str, Any]) -> Step:
    """A main-sweep step. What-ifs (`--experiment`) patch this build's gateway only: the baseline runs as it was."""
    return Step(target=target, calls=calls, **({**base, "experiments": ()} if target == "baseline" else base))


def variant_steps(args: argparse.Namespace, base: dict[str, Any]) -> list[Step]:
    """The same load under other settings: the production chunking, and uvloop for both processes."""
    if not args.variants:
        return []
    n = 100 if 100 in args.calls else max(args.calls)
    out = []
    if args.chunk_ms != 40:
        out.append(Step(target="gateway", calls=n, **{**base, "chunk_ms": 40}))
    other = "uvloop" if args.loop == "asyncio" else "asyncio"
    out += [Step(target=t, calls=n, **{**base, "loop": other}) for t in args.targets if t in ("gateway", "relay")]
    if max(args.calls) > n:
        out.append(Step(target="gateway", calls=max(args.calls), **{**base, "loop": other}))
    if args.caller_audio != "speech":
        # Callees talking all call: the voicemail-beep detector, which listens until the callee has answered (all
        # call long on a suspected machine), then tests every window; silence stops at its level check.
        talk_n = 300 if 300 in args.calls else max(args.calls)
        out.append(Step(target="gateway", calls=talk_n, **{**base, "caller_audio": "speech"}))
    return out


async def refine(run: Any, steps: list[dict[str, Any]], args: argparse.Namespace,
                 base: dict[str, Any]) -> dict[str, Any]:
    """For each target: the largest N that held and the smallest that broke, narrowed by bisection."""
    out: dict[str, Any] = {}
    for target in (t for t in args.targets if t != "system"):
        for _ in range(args.refine + 1):
            mine = sorted((s for s in steps if s["target"] == target and s["audio_format"] == "pcmu"),
                          key=lambda s: s["calls"])
            good = max((s["calls"] for s in mine if s["ok"]), default=None)
            bad = min((s["calls"] for s in mine if not s["ok"] and (good is None or s["calls"] > good)),
                      default=None)
            if good is None or bad is None or _ == args.refine:
                break
            mid = int(round((good + bad) / 2 / 10.0) * 10)
            if mid <= good or mid >= bad:
                mid = (good + bad) // 2
            if mid <= good or mid >= bad:
                break
            await run(step_for(target, mid, base))
        out[target] = {"holds_up_to": good, "breaks_at": bad}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", default="25,50,100,200,300,400", help="comma-separated concurrent call counts")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per step")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of streaming before the window opens")
    p.add_argument("--targets", default="gateway,relay,system",
                   help="any of gateway, relay, system (`haggle up` whole; always with a relay right after it), "
                        "baseline (the gateway of --baseline-commit; added beside gateway unless --no-baseline)")
    p.add_argument("--baseline-commit", default=baseline_build.BASELINE_COMMIT,
                   help="the build whose gateway the `baseline` target runs (default: the last before issue 18)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="do not measure the baseline build's gateway beside this one")
    p.add_argument("--system-calls", default=None,
                   help="N for the system step (default: 100 when the gateway sweep runs too, else --calls)")
    p.add_argument("--system-repeat", type=int, default=3,
                   help="system/relay pairs per N, run alternately (the report takes the median of each ratio)")
    p.add_argument("--quiet-wait", type=float, default=15.0,
                   help="seconds to wait, before each step, for other processes to use under 10%% of the machine")
    p.add_argument("--system-loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="HAGGLE_EVENT_LOOP for haggle up, and the relay measured beside it (auto: haggle's default)")
    p.add_argument("--chunk-ms", type=int, default=20,
                   help="the gateway's outbound_chunk_ms (production default 20: one Twilio frame)")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop" if uvloop_available() else "asyncio",
                   help="event loop of the gateway and relay steps (haggle up itself: --system-loop); default: "
                        "uvloop where installed, as `haggle run` serves")
    p.add_argument("--loadgen-loop", choices=["asyncio", "uvloop"],
                   default="uvloop" if uvloop_available() else "asyncio",
                   help="event loop of this process (the load generator): the leaner it is, the less of the "
                        "measured latency is its own")
    p.add_argument("--experiment", action="append", default=[],
                   help="patch the gateway with a what-if from benchmarks.experiments (repeatable)")
    p.add_argument("--caller-audio", choices=CALLER_AUDIO, default="silence",
                   help="what the callees send after each frame's id in the main sweep (the variants add speech)")
    p.add_argument("--pcm24k-calls", type=int, default=50, help="N for the pcm24k cost step (0: skip)")
    p.add_argument("--event-calls", type=int, default=100, help="calls publishing utterances (0: skip)")
    p.add_argument("--utterance-interval", type=float, default=3.0, help="seconds between a call's utterances")
    p.add_argument("--retries", type=int, default=2, help="re-measurements of a disturbed step")
    p.add_argument("--refine", type=int, default=1, help="bisection steps toward the saturation point")
    p.add_argument("--no-variants", dest="variants", action="store_false",
                   help="skip the runs under the production chunking and the other event loop")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not give the process under test a core of its own (the load generator and nats-server "
                        "share the other)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 10 and 25 calls, 4 s windows")
    p.add_argument("--profile", type=Path, default=None, help="folder for py-spy raw profiles of each step")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--no-readme", dest="readme", action="store_false",
                   help="write --out only: leave the READMEs' tables alone (for what-if runs)")
    p.add_argument("--plot", type=Path, default=PLOT)
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.duration, args.warmup = "10,25", 4.0, 1.0
        args.pcm24k_calls, args.event_calls, args.refine, args.variants, args.retries = 10, 20, 0, False, 0
        args.system_repeat = 1
    try:
        args.calls = [int(x) for x in str(args.calls).split(",") if x.strip()]
    except ValueError:
        p.error("--calls must be comma-separated integers")
    if not args.calls or min(args.calls) < 1:
        p.error("--calls needs at least one positive count")
    args.targets = [t.strip() for t in str(args.targets).split(",") if t.strip()]
    if not set(args.targets) <= {"gateway", "relay", "system", "baseline"} or not args.targets:
        p.error("--targets must be one or more of gateway, relay, system, baseline")
    if args.baseline and "gateway" in args.targets and "baseline" not in args.targets and not args.quick:
        args.targets.insert(args.targets.index("gateway") + 1, "baseline")
    elif not args.baseline and "baseline" in args.targets:
        args.targets.remove("baseline")
    args.system_only = "system" in args.targets and "gateway" not in args.targets
    if args.system_only:
        # The whole system alone (with its relay): none of the gateway-only steps.
        args.targets = ["system"]
        args.pcm24k_calls, args.event_calls, args.refine, args.variants = 0, 0, 0, False
    try:
        if args.system_calls is not None:
            args.system_calls = [int(x) for x in str(args.system_calls).split(",") if x.strip()]
        else:
            args.system_calls = (args.calls if args.system_only
                                 else [100] if 100 in args.calls else [max(args.calls)])
    except ValueError:
        p.error("--system-calls must be comma-separated integers")
    from haggle.loop import ENV, choose

    args.system_loop = choose({ENV: args.system_loop})
    if args.duration <= 0:
        p.error("--duration must be > 0")
    if args.system_repeat < 1:
        p.error("--system-repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    procstat.raise_fd_limit()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="haggle-bench-") as tmp:
        with asyncio.Runner(loop_factory=loop_factory(args.loadgen_loop)) as runner:
            results = runner.run(sweep(args, Path(tmp)))
    table = "" if args.system_only else report.markdown(results)
    system_table = report.system_markdown(results)
    print(table + ("\n" + system_table if system_table else ""))
    if args.quick:  # a smoke run does not replace the published figures
        path = Path(tempfile.gettempdir()) / "haggle-bench-quick.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"(quick run: results in {path})")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    readmes = (REPO / "benchmarks" / "README.md", REPO / "README.md") if args.readme else ()
    if system_table:  # its own file and markers: a system-only run leaves the gateway sweep's figures alone
        (args.out / "system.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "system-table.md").write_text(system_table)
        for readme in readmes:
            if report.update_readme(readme, system_table, markers=report.SYSTEM_MARKS):
                print(f"updated the whole-system results in {readme.relative_to(REPO)}")
    if args.system_only:
        return 0
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "README-table.md").write_text(table)
    for readme in readmes:
        if report.update_readme(readme, table):
            print(f"updated the results in {readme.relative_to(REPO)}")
    if report.plot(results, args.plot) is None:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
