"""Turns a benchmark run (the dict written to latest.json) into a markdown table and a PNG plot.

The plot needs matplotlib (the `bench` extra); without it `plot()` returns None and the table still works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BUDGET_MS = 20.0
START_MARK = "<!-- bench:results:start -->"
END_MARK = "<!-- bench:results:end -->"
SYSTEM_MARKS = ("<!-- bench:system:start -->", "<!-- bench:system:end -->")
# Issue 18's bar for the whole system against the relay at 100 calls.
SYSTEM_CPU_RATIO = 1.25
SYSTEM_P99_RATIO = 1.5


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _retried(s: dict[str, Any]) -> str:
    n = s.get("attempts", 1)
    return f" ({n} tries)" if n > 1 else ""


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _pcmu(results: dict[str, Any], target: str) -> list[dict[str, Any]]:
    steps = [s for s in results["steps"] if s["target"] == target and s["audio_format"] == "pcmu"]
    return sorted(steps, key=lambda s: s["calls"])


def _pair(results: dict[str, Any], n: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    g = next((s for s in _pcmu(results, "gateway") if s["calls"] == n), None)
    r = next((s for s in _pcmu(results, "relay") if s["calls"] == n), None)
    return g, r


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    steps = sorted((s for s in results["steps"] if s["audio_format"] == "pcmu"),
                   key=lambda s: (s["calls"], s["target"] != "gateway"))
    lines = [
        f"Gateway vs. a bare relay: {cfg['duration']:g} s measured per step after all calls stream, 20 ms mu-law "
        f"frames both ways per call (the callees' after each frame's id: "
        f"{'speech-like audio' if cfg.get('caller_audio') == 'speech' else 'silence'}), "
        f"gateway `outbound_chunk_ms={cfg['chunk_ms']}`, `{cfg['loop']}` event loop, "
        f"{results['machine']['cpus']} CPUs"
        + (": the process under test pinned to one, the load generator and nats-server on the other"
           if cfg.get("pin") else " shared by the process under test, the load generator and nats-server")
        + f" (run {results['started_at']}). \"Process CPU\" is a share of one core, "
        f"\"machine busy\" of both; \"other processes\" is what anything else on the machine used meanwhile.",
        "",
        "| calls | process | in p50 / p99 ms | out p50 / p99 ms | lost in / out | CPU s per call-min | "
        "RSS per call KiB | process CPU | machine busy | other processes | holds |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for s in steps:
        lines.append(
            f"| {s['calls']} | {s['target']} | {_f(s['in_p50_ms'])} / {_f(s['in_p99_ms'])} | "
            f"{_f(s['out_p50_ms'])} / {_f(s['out_p99_ms'])} | {s['in_lost']} / {s['out_lost']} | "
            f"{s['cpu_s_per_call_min']:.3f} | {_f(s['rss_per_call_kb'], 0)} | {s['cpu_share']:.0%} | "
            f"{s['machine_busy']:.0%} | {s.get('foreign_cpu_share', 0):.0%} | {'yes' if s['ok'] else '**no**'}"
            f"{_retried(s)} |")
    lines += ["", "Ratios gateway / relay (same run, same load generator):", "",
              "| calls | p99 in | p99 out | CPU per call-min | RSS per call |", "|---:|---:|---:|---:|---:|"]
    for n in sorted({s["calls"] for s in steps}):
        g, r = _pair(results, n)
        if g is None or r is None:
            continue
        lines.append(f"| {n} | {_x(_ratio(g['in_p99_ms'], r['in_p99_ms']))} | "
                     f"{_x(_ratio(g['out_p99_ms'], r['out_p99_ms']))} | "
                     f"{_x(_ratio(g['cpu_s_per_call_min'], r['cpu_s_per_call_min']))} | "
                     f"{_x(_ratio(g['rss_per_call_kb'], r['rss_per_call_kb']))} |")
    lines += ["", *saturation_lines(results), *baseline_lines(results), *pcm24k_lines(results), *event_lines(results),
              *variant_lines(results), *done_when(results)]
    return "\n".join(lines) + "\n"


def saturation_lines(results: dict[str, Any]) -> list[str]:
    out = []
    for target, sat in (results.get("saturation") or {}).items():
        good, bad = sat.get("holds_up_to"), sat.get("breaks_at")
        if bad is None:
            out.append(f"- Saturation ({target}): not reached; every step up to {good} calls held "
                       f"(no loss, p99 < {BUDGET_MS:g} ms both ways).")
        elif good is None:
            out.append(f"- Saturation ({target}): already broken at {bad} calls.")
        else:
            step = next(s for s in results["steps"] if s["target"] == target and s["calls"] == bad
                        and s["audio_format"] == "pcmu")
            held = next(s for s in results["steps"] if s["target"] == target and s["calls"] == good
                        and s["audio_format"] == "pcmu")
            out.append(f"- Saturation ({target}): holds at {good} calls ({held['cpu_share']:.0%} of a core), breaks "
                       f"at {bad}: its event loop at {step['cpu_share']:.0%} of a core (the machine "
                       f"{step['machine_busy']:.0%} busy), p99 {_f(step['in_p99_ms'])} / {_f(step['out_p99_ms'])} ms, "
                       f"lost {step['in_lost']} / {step['out_lost']}.")
    return out


def baseline_lines(results: dict[str, Any]) -> list[str]:
    """This build's gateway against the baseline build's, both measured in this run (calls held per core, and
    CPU per call-minute where both held): the ratios that survive a host's speed changing between runs."""
    sat = results.get("saturation") or {}
    new, old = sat.get("gateway") or {}, sat.get("baseline") or {}
    if not old:
        return []
    commit = str(results["config"].get("baseline_commit", ""))[:7]
    good_new, good_old = new.get("holds_up_to"), old.get("holds_up_to")
    if good_old is None:
        held = f"the baseline held none of its steps (it broke at {old.get('breaks_at')} calls)"
        if good_new is not None:
            held += f"; this build held {good_new}"
    else:
        held = (f"this build holds {good_new} calls per core, the baseline {good_old}: "
                f"{_x(_ratio(good_new, good_old))}" if good_new is not None else f"the baseline held {good_old}")
    both = [n for n in sorted({s["calls"] for s in _pcmu(results, "baseline") if s["ok"]})
            if any(g["calls"] == n and g["ok"] for g in _pcmu(results, "gateway"))]
    cpu = ""
    if both:
        n = both[-1]
        g = next(s for s in _pcmu(results, "gateway") if s["calls"] == n)
        b = next(s for s in _pcmu(results, "baseline") if s["calls"] == n)
        cpu = (f"; at {n} calls, CPU per call-minute {g['cpu_s_per_call_min']:.3f} against "
               f"{b['cpu_s_per_call_min']:.3f} ({_x(_ratio(g['cpu_s_per_call_min'], b['cpu_s_per_call_min']))})")
    return [f"- Against the baseline build (`{commit}`, the gateway before issue 18, same run and machine): "
            f"{held}{cpu}."]


def pcm24k_lines(results: dict[str, Any]) -> list[str]:
    p = results.get("pcm24k")
    if not p:
        return []
    g, _ = _pair(results, p["calls"])
    base = ""
    if g is not None:
        extra = p["cpu_s_per_call_min"] - g["cpu_s_per_call_min"]
        ratio = _x(_ratio(p["cpu_s_per_call_min"], g["cpu_s_per_call_min"]))
        base = (f" vs. {g['cpu_s_per_call_min']:.3f} with pcmu at the same N: the resampling costs "
                f"{extra:.3f} CPU s per call-minute ({ratio})")
    return [f"- pcm24k at {p['calls']} calls: {p['cpu_s_per_call_min']:.3f} CPU s per call-minute{base}; the gateway "
            f"process at {p['cpu_share']:.0%} of a core; RSS {_f(p['rss_per_call_kb'], 0)} KiB per call; p99 "
            f"{_f(p['in_p99_ms'])} / {_f(p['out_p99_ms'])} ms; lost {p['in_lost']} / {p['out_lost']} (latency "
            f"matched by frame order: resampling rewrites the bytes that carry frame ids)."]


def event_lines(results: dict[str, Any]) -> list[str]:
    e = results.get("event_path")
    if not e:
        return []
    return [f"- Event path (UtteranceTranscribed publish -> SQLite projection row): {e['utterances']} utterances "
            f"from {e['calls']} calls at {e['rate_per_s']}/s: lag p50 {_f(e['lag_p50_ms'])} ms, p99 "
            f"{_f(e['lag_p99_ms'])} ms, max {_f(e['lag_max_ms'])} ms; not projected: {e['not_projected']}."]


def variant_lines(results: dict[str, Any]) -> list[str]:
    variants = results.get("variants") or []
    if not variants:
        return []
    lines = ["", "The same load under other settings (each compared with the gateway, or the relay, of the main run at "
             "the same N, and with the relay on the same event loop):", "",
             "| setting | calls | process | in p99 ms | out p99 ms (per frame) | lost | CPU s per call-min | "
             "vs. main run | vs. relay, same loop | holds |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|:---:|"]
    for v in variants:
        setting = f"`{v['loop']}` loop, `outbound_chunk_ms={v['chunk_ms']}`"
        if v.get("caller_audio", "silence") != results.get("config", {}).get("caller_audio", "silence"):
            setting += f", callers: {v['caller_audio']}"
        main = next((s for s in _pcmu(results, v["target"]) if s["calls"] == v["calls"]), None)
        relay = next((r for r in [*variants, *results["steps"]] if r["target"] == "relay" and r["loop"] == v["loop"]
                      and r["calls"] == v["calls"] and r["audio_format"] == "pcmu"), None)
        vs_main = _ratio(v["cpu_s_per_call_min"], main["cpu_s_per_call_min"]) if main else None
        vs_relay = _ratio(v["cpu_s_per_call_min"], relay["cpu_s_per_call_min"]) if relay and v is not relay else None
        lines.append(f"| {setting} | {v['calls']} | {v['target']} | {_f(v['in_p99_ms'])} | {_f(v['out_p99_ms'])} "
                     f"({_f(v['out_frame_p99_ms'])}) | {v['in_lost']} / {v['out_lost']} | "
                     f"{v['cpu_s_per_call_min']:.3f} | {_x(vs_main)} | {_x(vs_relay)} | "
                     f"{'yes' if v['ok'] else '**no**'} |")
    return lines


def done_when(results: dict[str, Any], n: int = 100) -> list[str]:
    g, r = _pair(results, n)
    if g is None or r is None:
        return []
    checks = [
        ("no frame lost", g["in_lost"] == 0 and g["out_lost"] == 0, f"{g['in_lost']} / {g['out_lost']}"),
        (f"p99 < {BUDGET_MS:g} ms each way", max(g["in_p99_ms"] or 1e9, g["out_p99_ms"] or 1e9) < BUDGET_MS,
         f"{_f(g['in_p99_ms'])} / {_f(g['out_p99_ms'])} ms"),
    ]
    for way in ("in", "out"):
        ratio = _ratio(g[f"{way}_p99_ms"], r[f"{way}_p99_ms"])
        checks.append((f"p99 {way} within 2x the relay's", ratio is not None and ratio <= 2.0,
                       f"{_f(ratio, 2)}x"))
    cpu = _ratio(g["cpu_s_per_call_min"], r["cpu_s_per_call_min"])
    checks.append(("CPU per call-minute within 1.5x the relay's", cpu is not None and cpu <= 1.5, f"{_f(cpu, 2)}x"))
    lines = ["", f"Done-when at {n} calls:", ""]
    lines += [f"- [{'x' if ok else ' '}] {name}: {value}" for name, ok, value in checks]
    return lines


_RATIOS = (("p50 in", "in_p50_ms"), ("p99 in", "in_p99_ms"), ("p50 out", "out_p50_ms"), ("p99 out", "out_p99_ms"),
           ("CPU per call-min", "cpu_s_per_call_min"), ("RSS per call", "rss_per_call_kb"))


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def system_ratios(pairs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per N: each metric's haggle up / relay ratio in every pair, and their median (the pairs' own ratios, so
    a burst of someone else's work lands on both halves of a pair rather than on one side of the comparison)."""
    out: dict[int, dict[str, Any]] = {}
    for n in sorted({p["system"]["calls"] for p in pairs}):
        mine = [p for p in pairs if p["system"]["calls"] == n]
        row: dict[str, Any] = {"pairs": len(mine),
                               "in_lost": sum(p["system"]["in_lost"] for p in mine),
                               "out_lost": sum(p["system"]["out_lost"] for p in mine)}
        for _, key in _RATIOS:
            each = [r for p in mine if (r := _ratio(p["system"][key], p["relay"][key])) is not None]
            row[key] = {"median": _median(each), "min": min(each, default=None), "max": max(each, default=None)}
        out[n] = row
    return out


def _xr(r: dict[str, Any]) -> str:
    if r["median"] is None:
        return "-"
    if r["min"] == r["max"]:
        return _x(r["median"])
    return f"{_x(r['median'])} ({r['min']:.2f}-{r['max']:.2f})"


def system_markdown(results: dict[str, Any]) -> str:
    """The whole-system step: `haggle up` (its process and its nats-server) against a relay measured right after
    it, in pairs; empty if the run had no system step."""
    pairs = results.get("system") or []
    if not pairs:
        return ""
    cfg = results["config"]
    first = pairs[0]["system"]
    lines = [
        f"Whole system vs. a bare relay: `haggle up` (gateway, projector on SQLite, dispatcher and extractor in "
        f"one process, plus the nats-server it starts; CPU and memory are the sum over that process tree) takes N "
        f"calls streaming 20 ms mu-law frames both ways; the relay takes the same load right after it, and the "
        f"pair is repeated. {cfg['duration']:g} s measured per step, `{first['loop']}` event loop for both, "
        f"{results['machine']['cpus']} CPUs"
        + (": the process tree under test pinned to one, the load generator on the other"
           if cfg.get("pin") else "")
        + f" (run {results['started_at']}). The machine was shared with other work (\"other processes\" is what "
        "it used meanwhile): absolute figures swing with it, so the comparison is the median of the pairs' ratios.",
        "",
        "| calls | pair | process | in p50 / p99 ms | out p50 / p99 ms | lost in / out | CPU s per call-min | "
        "RSS per call KiB | CPU (of one core) | of which nats-server | gen-2 GCs, max ms | other processes | "
        "load generator lag p99 ms | holds |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for pair in pairs:
        for name, s in (("haggle up", pair["system"]), ("relay", pair["relay"])):
            kids = f"{s.get('children_cpu_share', 0):.0%}" if name == "haggle up" else "-"
            gc = s.get("child", {}).get("gc") or {}
            full = f"{gc['count'][2]}, {gc['max_ms'][2]:.0f}" if gc.get("count") else "-"
            lines.append(
                f"| {s['calls']} | {pair.get('round', 0) + 1} | {name} | {_f(s['in_p50_ms'])} / {_f(s['in_p99_ms'])} | "
                f"{_f(s['out_p50_ms'])} / {_f(s['out_p99_ms'])} | {s['in_lost']} / {s['out_lost']} | "
                f"{s['cpu_s_per_call_min']:.3f} | {_f(s['rss_per_call_kb'], 0)} | {s['cpu_share']:.0%} | {kids} | "
                f"{full} | {s.get('foreign_cpu_share', 0):.0%} | {_f(s.get('tick_lag_p99_ms'))} | "
                f"{'yes' if s['ok'] else '**no**'}{_retried(s)} |")
    ratios = system_ratios(pairs)
    lines += ["", "Ratios haggle up / relay: median over the pairs (range):", "",
              "| calls | pairs | " + " | ".join(name for name, _ in _RATIOS) + " |",
              "|---:|---:|" + "---:|" * len(_RATIOS)]
    for n, row in ratios.items():
        lines.append(f"| {n} | {row['pairs']} | " + " | ".join(_xr(row[key]) for _, key in _RATIOS) + " |")
    lines += system_done_when(ratios)
    return "\n".join(lines) + "\n"


def system_done_when(ratios: dict[int, dict[str, Any]], n: int = 100) -> list[str]:
    row = ratios.get(n)
    if row is None:
        return []
    cpu = row["cpu_s_per_call_min"]["median"]
    checks = [(f"CPU per call-minute at most {SYSTEM_CPU_RATIO:g}x the relay's",
               cpu is not None and cpu <= SYSTEM_CPU_RATIO, f"{_f(cpu, 2)}x")]
    for way in ("in", "out"):
        ratio = row[f"{way}_p99_ms"]["median"]
        checks.append((f"p99 {way} at most {SYSTEM_P99_RATIO:g}x the relay's",
                       ratio is not None and ratio <= SYSTEM_P99_RATIO, f"{_f(ratio, 2)}x"))
    checks.append(("0 frames lost", row["in_lost"] == 0 and row["out_lost"] == 0,
                   f"{row['in_lost']} / {row['out_lost']}"))
    lines = ["", f"Targets at {n} calls, medians of {row['pairs']} pair(s):", ""]
    lines += [f"- [{'x' if ok else ' '}] {name}: {value}" for name, ok, value in checks]
    return lines


def update_readme(path: Path, table: str, markers: tuple[str, str] = (START_MARK, END_MARK)) -> bool:
    """Replace what sits between the bench markers in a README with `table`; False if it has no markers."""
    start_mark, end_mark = markers
    try:
        text = path.read_text()
    except FileNotFoundError:
        return False
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        return False
    path.write_text(text[: start + len(start_mark)] + "\n" + table.rstrip() + "\n" + text[end:])
    return True


def plot(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    styles = {"gateway": ("tab:blue", "-"), "relay": ("tab:gray", "--"), "baseline": ("tab:orange", "-.")}
    lat, cpu, core = axes
    loop = results["config"]["loop"]
    for target, (color, ls) in styles.items():
        steps = _pcmu(results, target)
        if not steps:
            continue
        n = [s["calls"] for s in steps]
        lat.plot(n, [s["in_p99_ms"] for s in steps], ls, color=color, marker="o", label=f"{target} in")
        lat.plot(n, [s["out_p99_ms"] for s in steps], ls, color=color, marker="s", alpha=0.6, label=f"{target} out")
        cpu.plot(n, [s["cpu_s_per_call_min"] for s in steps], ls, color=color, marker="o", label=f"{target} ({loop})")
        core.plot(n, [100 * s["cpu_share"] for s in steps], ls, color=color, marker="o", label=f"{target} process")
        core.plot(n, [100 * s["machine_busy"] for s in steps], ":", color=color, lw=1,
                  label=f"machine, {target} run")
        for s in steps:
            if s["in_lost"] or s["out_lost"]:
                core.annotate(f"lost {s['in_lost'] + s['out_lost']}", (s["calls"], 100 * s["cpu_share"]),
                              textcoords="offset points", xytext=(4, -12), fontsize=8, color=color)
    for target, (color, _) in styles.items():
        other = sorted((v for v in results.get("variants") or [] if v["target"] == target and v["loop"] != loop
                        and v["chunk_ms"] == results["config"]["chunk_ms"]), key=lambda v: v["calls"])
        if other:
            n, label = [v["calls"] for v in other], f"{target} ({other[0]['loop']})"
            cpu.plot(n, [v["cpu_s_per_call_min"] for v in other], "D", mfc="none", color=color, label=label)
            core.plot(n, [100 * v["cpu_share"] for v in other], "D", mfc="none", color=color, label=label)
    lat.axhline(BUDGET_MS, color="tab:red", lw=0.8, ls=":", label=f"{BUDGET_MS:g} ms budget")
    lat.set(title="p99 forwarding latency", xlabel="concurrent calls", ylabel="ms", yscale="log")
    cpu.set(title="CPU seconds per call-minute", xlabel="concurrent calls", ylabel="CPU s / call-min")
    core.set(title="CPU used (% of one core; 2 cores in all)", xlabel="concurrent calls", ylabel="%",
             ylim=(0, 110))
    core.axhline(100, color="tab:red", lw=0.8, ls=":")
    for target, sat in (results.get("saturation") or {}).items():
        if sat.get("breaks_at") and sat.get("holds_up_to"):
            for ax in axes:
                ax.axvspan(sat["holds_up_to"], sat["breaks_at"], color=styles[target][0], alpha=0.08)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Haggle media gateway (blue; orange: the build before issue 18) vs. a bare relay (gray), 20 ms "
                 "frames both ways per call "
                 "(shaded: between the last N that held and the first that broke)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
