"""``streamguard evaluate``: every scenario over several seeds, streamguard beside reference judges.

Each (scenario, seed) run is independent, so ``--jobs`` runs them in parallel processes. The
report (Markdown) goes to stdout or ``--out``; ``--json`` also writes the numbers. How a run
is timed and what counts as a false command: :mod:`streamguard.evaluation.runner`; the
reference judges: :mod:`streamguard.evaluation.judges`.
"""

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from streamguard.cli.errors import EXIT_CONFIG, EXIT_USAGE, fail

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``evaluate`` command."""
    parser = sub.add_parser("evaluate", help="detection quality against reference judges")
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="a scenario to run (repeatable; default: every scenario)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per scenario (1..N)")
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=900.0, help="seconds of event time")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="runs in parallel processes"
    )
    parser.add_argument("--out", help="write the Markdown report here (default: stdout)")
    parser.add_argument("--json", help="also write the numbers as JSON here")
    parser.add_argument(
        "--runs",
        help="JSON-lines file of finished runs: reused when their parameters match, and "
        "appended to as runs finish (resume a long evaluation, or add a scenario to one)",
    )
    parser.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> list[str]:
    from streamguard.sim.scenarios import SCENARIOS

    names = args.scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        fail(f"unknown scenario {unknown[0]!r}; one of: {', '.join(SCENARIOS)}", EXIT_USAGE)
    if not 1 <= args.seeds <= 100:
        fail(f"--seeds must be 1 to 100, got {args.seeds}", EXIT_USAGE)
    if not 1 <= args.rate <= 100_000:
        fail(f"--rate must be 1 to 100,000 requests/s, got {args.rate:g}", EXIT_USAGE)
    if not 60 <= args.duration <= 86400:
        fail(f"--duration must be 60 s to one day, got {args.duration:g}", EXIT_USAGE)
    if not 1 <= args.jobs <= 64:
        fail(f"--jobs must be 1 to 64, got {args.jobs}", EXIT_USAGE)
    return list(dict.fromkeys(names))


def _writable(path: str | None) -> Path | None:
    """Check up front that an output can be written, so a long run does not fail at the end."""
    if path is None:
        return None
    target = Path(path)
    if not target.parent.is_dir():
        fail(f"cannot write {path}: no directory {target.parent}", EXIT_CONFIG)
    if target.is_dir():
        fail(f"cannot write {path}: it is a directory", EXIT_CONFIG)
    return target


def _one(job: tuple[str, int, float, float]) -> Any:
    from streamguard.evaluation import run

    name, seed, rate, duration = job
    return run(name, seed, rate=rate, duration=duration)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and write the report; exit 0 when it was written."""
    names = _check(args)
    out, json_out, runs_file = _writable(args.out), _writable(args.json), _writable(args.runs)
    import orjson

    from streamguard.evaluation.report import summarise, to_json, to_markdown

    jobs = [(n, seed, args.rate, args.duration) for n in names for seed in range(1, args.seeds + 1)]
    done = _finished(runs_file)
    reused = [done[job] for job in jobs if job in done]
    jobs = [job for job in jobs if job not in done]
    print(
        f"streamguard evaluate: {len(names)} scenarios x {args.seeds} seeds, "
        f"{args.rate:g} requests/s, {args.duration:g} s each, {args.jobs} jobs",
        file=sys.stderr,
    )
    if reused:
        print(f"  reusing {len(reused)} finished runs from {runs_file}", file=sys.stderr)
    results = list(reused)
    if args.jobs == 1 or len(jobs) <= 1:
        results += [_progress(result, runs_file, args.rate) for result in map(_one, jobs)]
    else:
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(jobs))) as pool:
            # As each finishes, so a long evaluation's runs file keeps everything done so far.
            futures = [pool.submit(_one, job) for job in jobs]
            results += [_progress(f.result(), runs_file, args.rate) for f in as_completed(futures)]
    order = {name: i for i, name in enumerate(names)}
    results.sort(key=lambda r: (order[r.scenario], r.seed))  # the report's rows, in order
    summary = summarise(results, args.rate)
    report = to_markdown(summary, _command(args))
    if out is None:
        sys.stdout.write(report)
    else:
        out.write_text(report)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(to_json(summary), option=orjson.OPT_INDENT_2))
    return 0


def _finished(path: Path | None) -> dict[tuple[str, int, float, float], Any]:
    """Runs recorded in ``path``, by (scenario, seed, rate, duration)."""
    import orjson

    from streamguard.evaluation import JudgeRun, RunResult

    if path is None or not path.exists():
        return {}
    found: dict[tuple[str, int, float, float], Any] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            raw = orjson.loads(line)
            judges = {k: JudgeRun(**v) for k, v in raw["result"]["judges"].items()}
            result = RunResult(**{**raw["result"], "judges": judges})
            key = (result.scenario, result.seed, float(raw["rate"]), result.duration_s)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            fail(f"{path}:{number}: not a run record ({exc})", EXIT_CONFIG)
        found[key] = result
    return found


def _progress(result: Any, runs_file: Path | None, rate: float) -> Any:
    found = ", ".join(
        f"{j}: {'caught' if r.detected else 'quiet'}"
        + (f" +{r.delay_s:.0f} s" if r.delay_s is not None else "")
        + (f" ({r.false_commands} false)" if r.false_commands else "")
        for j, r in result.judges.items()
    )
    print(f"  {result.scenario} seed {result.seed}: {found}", file=sys.stderr)
    if runs_file is not None:
        import dataclasses

        import orjson

        record = {"rate": rate, "result": dataclasses.asdict(result)}
        with runs_file.open("ab") as stream:
            stream.write(orjson.dumps(record) + b"\n")
    return result


def _command(args: argparse.Namespace) -> str:
    parts = ["streamguard", "evaluate", f"--seeds={args.seeds}", f"--rate={args.rate:g}"]
    parts.append(f"--duration={args.duration:g}")
    parts += [f"--scenario={n}" for n in args.scenario or []]
    return " ".join(parts)
