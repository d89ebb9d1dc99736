"""Run every benchmark and write ``benchmarks/results.json`` and ``benchmarks/results.md``.

    python -m benchmarks.run [--quick] [--only e2e,latency] [--out-dir benchmarks]

``make bench`` runs it with the full parameters (about 15 minutes on 2 cores). ``--quick``
uses small parameters (a smoke run; its figures mean little). ``--only`` runs some benchmarks
and replaces just their entries in an existing results file. A benchmark that fails is
recorded with its error, and the others still run.

Each benchmark is a module with ``measure(...) -> dict`` and a ``main()``; the command that
reproduces each figure is written next to it. The engine benchmark belongs to
:mod:`benchmarks.engine`: its ``measure(seconds, rate, repeat)`` is called when it exists, and
otherwise its command line is run and its JSON output read.
"""

import argparse
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import e2e, latency, memory, scaling
from benchmarks.common import ROOT, environment

__all__ = ["BENCHMARKS", "Benchmark", "main", "render", "rows"]


@dataclass(frozen=True)
class Benchmark:
    """How to run one benchmark, fully or quickly, and the command that reproduces it."""

    name: str
    title: str
    full: dict[str, Any]
    quick: dict[str, Any]
    command: Callable[[dict[str, Any]], str]
    run: Callable[[dict[str, Any]], dict[str, Any]]


def _engine(params: dict[str, Any]) -> dict[str, Any]:
    """:func:`benchmarks.engine.measure` if it exists, else its command line's JSON output."""
    from benchmarks import engine

    measure = getattr(engine, "measure", None)
    if callable(measure):
        result = measure(params["seconds"], params["rate"], params["repeat"])
        return dict(result)
    args = [sys.executable, "-m", "benchmarks.engine"]
    args += [f"--{k}={v}" for k, v in params.items()]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    start = out.stdout.index("{")
    parsed: dict[str, Any] = json.loads(out.stdout[start:])
    return parsed


def _flags(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        shown = ",".join(str(v) for v in value) if isinstance(value, list | tuple) else value
        parts.append(f"--{key.replace('_', '-')} {shown}")
    return " ".join(parts)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "engine",
            "Engine throughput in-process",
            {"seconds": 120, "rate": 2000.0, "repeat": 3},
            {"seconds": 10, "rate": 500.0, "repeat": 1},
            lambda p: f"python -m benchmarks.engine {_flags(p)}",
            _engine,
        ),
        Benchmark(
            "e2e",
            "End to end through the broker, one worker, against a bare Faust agent",
            {"single_events": 60_000, "batch_events": 2_400_000, "repeat": 3},
            {"single_events": 3_000, "batch_events": 40_000, "repeat": 1},
            lambda p: f"python -m benchmarks.e2e {_flags(p)}",
            lambda p: e2e.measure(**p),
        ),
        Benchmark(
            "latency",
            "Latency from window close to verdict and to command, under load",
            {"deployments": 4, "rate": 200.0, "seconds": 240, "speed": 2.0},
            {"deployments": 2, "rate": 50.0, "seconds": 80, "speed": 4.0},
            lambda p: f"python -m benchmarks.latency {_flags(p)}",
            lambda p: latency.measure(**p),
        ),
        Benchmark(
            "memory",
            "Worker memory against slices and events",
            {"slices": (10, 100, 1000, 10000), "rate": 100.0, "seconds": memory.SECONDS},
            {"slices": (10, 100), "rate": 50.0, "seconds": 30, "events_slices": 100},
            lambda p: f"python -m benchmarks.memory {_flags(p)}",
            lambda p: memory.measure(**p),
        ),
        Benchmark(
            "scaling",
            "Throughput with 1, 2 and 3 workers in one consumer group",
            {"workers": (1, 2, 3), "events": 600_000},
            {"workers": (1, 2), "events": 40_000},
            lambda p: f"python -m benchmarks.scaling {_flags(p)}",
            lambda p: scaling.measure(**p),
        ),
    )
}

#: (figure, value, goal, met): met is True, False or None (no goal).
Row = tuple[str, str, str, bool | None]


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _batches_vs_bare(mode: str, events_per_s: float, ratio: float) -> list[Row]:
    """The worker's rate on one kind of batch, and its ratio to the bare agent (goal ≥ 20)."""
    return [
        (f"worker, {mode}, events/s", _n(events_per_s), "", None),
        (f"worker {mode} ÷ bare agent", _n(ratio, 2), "≥ 20", ratio >= 20),
    ]


def _by_cpu(r: dict[str, Any]) -> list[Row]:
    """The end-to-end figures by CPU time (results before 2026-11-24 have none)."""
    if "bare_cpu_us_per_message" not in r:
        return []
    modes = ("single", "batch", "columns")
    per_event = " / ".join(_n(r[f"worker_{m}_cpu_us_per_event"], 2) for m in modes)
    ratios = " / ".join(_n(r[f"{m}_vs_bare_cpu"], 2) for m in modes)
    return [
        ("bare agent, CPU µs per message", _n(r["bare_cpu_us_per_message"], 2), "", None),
        ("worker, CPU µs per event (1/message / batches / columns)", per_event, "", None),
        ("by CPU: bare µs/message ÷ worker µs/event (same order)", ratios, "", None),
    ]


def rows(name: str, result: dict[str, Any]) -> list[Row]:
    """The figures of one benchmark's result, with their goals where issue 8 sets one."""
    r = result
    if name == "engine":
        figures: list[Row] = []
        # Row envelopes and columnar batches (results of older runs are flat: rows only).
        for kind in ("rows", "columns") if "rows" in r else ("",):
            part, label = (r[kind], f" ({kind})") if kind else (r, "")
            ratio = part.get("engine_vs_orjson")
            pairs = part.get("engine_paired_events_per_s", part.get("engine_pairs_per_s"))
            figures += [
                (
                    f"orjson.loads alone{label}, events/s",
                    _n(part.get("orjson_events_per_s")),
                    "",
                    None,
                ),
                (
                    f"decode + validate{label}, events/s",
                    _n(part.get("decode_events_per_s")),
                    "",
                    None,
                ),
                (f"whole engine{label}, events/s", _n(part.get("engine_events_per_s")), "", None),
                (
                    f"whole engine / orjson alone{label}",
                    _n(ratio, 3),
                    "≥ 0.5",
                    ratio >= 0.5 if ratio is not None else None,
                ),
                (
                    f"paired events/s{label} (one process)",
                    _n(pairs),
                    "≥ 1,000,000",
                    pairs >= 1e6 if pairs is not None else None,
                ),
            ]
        return figures
    if name == "e2e":
        return [
            ("bare Faust agent, messages/s (1 event each)", _n(r["bare_messages_per_s"]), "", None),
            (
                "worker, 1 event per message, events/s",
                _n(r["worker_single_events_per_s"]),
                "",
                None,
            ),
            (
                "worker 1 event/message ÷ bare agent",
                _n(r["single_vs_bare"], 3),
                "≥ 0.8",
                r["single_vs_bare"] >= 0.8,
            ),
            *_batches_vs_bare(
                "batch envelopes", r["worker_batch_events_per_s"], r["batch_vs_bare"]
            ),
            *(
                []  # results before 2026-11-25 have no lean baseline
                if r.get("single_vs_lean_bare") is None
                else [
                    (
                        "bare agent on the worker's fetch loop, messages/s",
                        _n(r["lean_bare_messages_per_s"]),
                        "",
                        None,
                    ),
                    (
                        "worker 1 event/message ÷ that bare agent",
                        _n(r["single_vs_lean_bare"], 3),
                        "",
                        None,
                    ),
                ]
            ),
            *(
                []
                if r.get("columns_vs_bare") is None
                else _batches_vs_bare(
                    "columnar batches", r["worker_columns_events_per_s"], r["columns_vs_bare"]
                )
            ),
            *_by_cpu(r),
        ]
    if name == "latency":
        c, v = r["command_latency_s"], r["verdict_latency_s"]
        p99 = c["p99"]
        return [
            ("load, events/s (batch envelopes)", _n(r["load_events_per_s"]), "", None),
            ("window close → command, p50 (s)", _n(c["p50"], 3), "", None),
            (
                f"window close → command, p99 (s), n={c['n']}",
                _n(p99, 3),
                "< 1 s",
                p99 < 1.0 if p99 is not None else False,
            ),
            (
                "… of which worker (close → signed), p99 (s)",
                _n(r["command_worker_part_s"]["p99"], 3),
                "",
                None,
            ),
            ("window close → verdict, p50 (s)", _n(v["p50"], 3), "", None),
            (f"window close → verdict, p99 (s), n={v['n']}", _n(v["p99"], 3), "", None),
        ]
    if name == "memory":
        idle = r["by_slices"][0]["idle_rss_mb"] if r["by_slices"] else None
        out: list[Row] = [("RSS (MB), idle worker (ready, no events)", _n(idle, 1), "", None)]
        for row in r["by_slices"]:
            goal = "< 300 MB" if row["slices"] == 1000 else ""
            met = row["rss_mb"] < 300 if row["slices"] == 1000 else None
            out.append(
                (
                    f"RSS (MB), {row['slices']:,} slices, {row['events']:,} events",
                    _n(row["rss_mb"], 1),
                    goal,
                    met,
                )
            )
            if "rss_stage1_done_mb" in row:  # results written before the drain was measured
                out.append(
                    (
                        f"… {row['slices']:,} slices: when stage 1 was done / peak (MB); "
                        f"stage 2 drained {row['drain_s']} s later",
                        f"{_n(row['rss_stage1_done_mb'], 1)} / {_n(row['peak_rss_mb'], 1)}",
                        "",
                        None,
                    )
                )
        ev = r["by_events"]
        out.append(
            (
                f"RSS (MB), {ev['slices']:,} slices, after {ev['n_events']:,} events",
                _n(ev["after_n"]["rss_mb"], 1),
                "",
                None,
            )
        )
        out.append(
            (
                f"RSS (MB), {ev['slices']:,} slices, after {ev['after_4n_events']:,} events",
                _n(ev["after_4n"]["rss_mb"], 1),
                "",
                None,
            )
        )
        if "rss_mb_by_step" in ev:  # results written before the events came in equal bursts
            steps = " / ".join(_n(v, 1) for v in ev["rss_mb_by_step"])
            peaks = " / ".join(_n(v, 1) for v in ev["peak_rss_mb_by_step"])
            out.append(
                (
                    "… RSS after N / 2N / 3N / 4N (MB); peak so far (MB)",
                    f"{steps}; {peaks}",
                    "",
                    None,
                )
            )
        growth = ev["growth_4n_vs_n"]
        out.append(("RSS after 4N events ÷ after N", _n(growth, 3), "≤ 1.10", growth <= 1.10))
        return out
    if name == "scaling":
        out = []
        for run in r["runs"]:
            out.append(
                (
                    f"{run['workers']} worker(s), events/s (speed-up)",
                    f"{_n(run['events_per_s'])} (×{_n(run['speedup'], 2)})",
                    "",
                    None,
                )
            )
            if run.get("worker_cpu_us_per_event") is not None:  # older runs had no CPU figures
                out.append(
                    (
                        f"… {run['workers']} worker(s): worker CPU per event (µs); "
                        "worker / broker CPU (s)",
                        f"{_n(run['worker_cpu_us_per_event'], 2)}; "
                        f"{_n(run['worker_cpu_s'], 1)} / {_n(run['broker_cpu_s'], 1)}",
                        "",
                        None,
                    )
                )
        return out
    return []


def _met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: ""}[met]


def render(results: dict[str, Any]) -> str:
    """results.md: one table per benchmark, with its command, load average, date and commit."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks.run` (`make bench`); do not edit by hand. Every",
        "figure was measured on the machine named below, which is shared: compare the ratios,",
        "measured within one run, rather than the absolute rates. What each benchmark measures,",
        "exactly, is in its module's docstring (`benchmarks/<name>.py`).",
        "",
    ]
    for name, entry in results["benchmarks"].items():
        bench = BENCHMARKS.get(name)
        lines += [f"## {bench.title if bench else name}", ""]
        lines.append(f"Command: `{entry['command']}`")
        env = entry.get("environment") or {}
        lines.append(
            f"Date {env.get('date', '?')}, commit `{env.get('commit', '?')}`, "
            f"{env.get('cpus', '?')} CPUs, load average at start {env.get('loadavg', '?')}"
            + (
                f", after {entry['result'].get('loadavg_after')}"
                if isinstance(entry.get("result"), dict) and "loadavg_after" in entry["result"]
                else ""
            )
            + f"; took {entry.get('seconds', '?')} s."
        )
        lines.append("")
        if "error" in entry:
            lines += ["Failed:", "", "```", entry["error"].strip(), "```", ""]
            continue
        lines += ["| figure | value | goal | met? |", "|---|---:|---|---|"]
        for figure, value, goal, met in rows(name, entry["result"]):
            lines.append(f"| {figure} | {value} | {goal} | {_met(met)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Command line: run the benchmarks, write the two results files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small parameters (smoke run)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
    json_path = args.out_dir / "results.json"
    results: dict[str, Any] = {"benchmarks": {}}
    if args.only and json_path.exists():
        results = json.loads(json_path.read_text())
    results["quick"] = args.quick
    for name in names:
        bench = BENCHMARKS[name]
        params = bench.quick if args.quick else bench.full
        entry: dict[str, Any] = {"command": bench.command(params), "environment": environment()}
        print(f"[bench] {name}: {entry['command']}", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            entry["result"] = bench.run(dict(params))
        except Exception:  # one failing benchmark must not lose the others' results
            entry["error"] = traceback.format_exc()
            print(entry["error"], file=sys.stderr, flush=True)
        entry["seconds"] = round(time.monotonic() - started)
        results["benchmarks"][name] = entry
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"[bench] {name}: done in {entry['seconds']} s", file=sys.stderr, flush=True)
    (args.out_dir / "results.md").write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    main()
