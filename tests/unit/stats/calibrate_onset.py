"""Simulation behind OnsetTracker's defaults (a script, not a test; pytest only imports it).

Run from the repository root::

    .venv/bin/python -m tests.unit.stats.calibrate_onset [threshold,delta,min_instances ...]

For each setting it prints (a) the per-run false-alarm rate of ``update()`` over 1000
stationary series of 360 windows with values ``~ N(0.4, σ²)`` clipped at 0 (σ = 0.1, and
0.2 to 0.6 as a robustness check), and (b) the detection delay, in windows from the first
shifted window (1 = alarm on it), for steps from 0.4 to 1.5 and to 3.0 placed after 10, 60
or 300 windows (1000 runs each), with how often :meth:`OnsetTracker.onset` then dates the
step exactly.
"""

import sys

import numpy as np

from streamguard.stats.onset import OnsetTracker

RUNS = 1000
LENGTH = 360


def false_alarm_rate(params: dict[str, float], sd: float, rng: np.random.Generator) -> float:
    """Fraction of stationary runs in which update() ever returns True."""
    alarms = 0
    for _ in range(RUNS):
        tracker = OnsetTracker(**params)  # type: ignore[arg-type]
        x = np.maximum(rng.normal(0.4, sd, LENGTH), 0.0)
        alarms += any(tracker.update(float(i), float(v)) for i, v in enumerate(x))
    return alarms / RUNS


def delays(
    params: dict[str, float], level: float, start: int, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Delay per run (inf if missed or alarmed early) and the share of exact onsets."""
    out = np.full(RUNS, np.inf)
    exact = 0
    for r in range(RUNS):
        tracker = OnsetTracker(**params)  # type: ignore[arg-type]
        x = np.maximum(rng.normal(0.4, 0.1, LENGTH), 0.0)
        x[start:] += level - 0.4
        for i, v in enumerate(x):
            if tracker.update(float(i), float(v)):
                if i >= start:
                    out[r] = i - start + 1
                    exact += tracker.onset() == float(start)
                break
    return out, exact / RUNS


def main(argv: list[str]) -> None:
    settings = [tuple(float(a) for a in arg.split(",")) for arg in argv] or [(3.0, 0.25, 6)]
    for threshold, delta, min_instances in settings:
        params = {"threshold": threshold, "delta": delta, "min_instances": int(min_instances)}
        rng = np.random.default_rng(12345)
        print(f"threshold={threshold} delta={delta} min_instances={int(min_instances)}")
        for sd in (0.1, 0.2, 0.3, 0.4, 0.6):
            rate = false_alarm_rate(params, sd, rng)
            print(f"  (a) false alarms, sd={sd}: {rate:.3f} per 360-window run")
        for level in (1.5, 3.0):
            for start in (10, 60, 300):
                d, exact = delays(params, level, start, rng)
                print(
                    f"  (b) 0.4->{level} after {start} windows: delay median "
                    f"{np.median(d):.0f}, p95 {np.percentile(d, 95):.0f}, max {d.max():.0f}; "
                    f"onset exact {exact:.1%}"
                )


if __name__ == "__main__":
    main(sys.argv[1:])
