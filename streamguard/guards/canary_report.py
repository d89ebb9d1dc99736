"""What the canary guard reports: its test results per slice, as verdicts and findings show them.

:class:`Tested` holds the cumulative test's results per metric and label;
the functions here turn them into a verdict's slice list, its ``global`` summary, and the
one-line summary and stats of a finding.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.core.verdict import SliceResult, clean_float, clean_floats
from streamguard.guards.canary_metrics import any_metric
from streamguard.policy import CANARY_METRICS

__all__ = [
    "ARMS",
    "Tested",
    "describe",
    "p99_of",
    "row_stats",
    "row_summary",
    "slice_results",
]

F64 = npt.NDArray[np.float64]
ARMS = ("canary", "baseline")


@dataclass
class Tested:
    """What the cumulative test found, per metric and label (aligned with ``labels``)."""

    labels: list[str]
    canary: dict[str, F64]  # metric -> moments per label
    baseline: dict[str, F64]
    delta: dict[str, F64]
    p: dict[str, F64]  # running, always valid
    tau: dict[str, F64]
    lower: dict[str, F64]
    upper: dict[str, F64]
    judged: dict[str, npt.NDArray[np.bool_]]
    regressed: dict[str, npt.NDArray[np.bool_]]  # significant (after BH), harmful, practical
    p99: dict[str, F64] = field(default_factory=dict)  # arm -> latency p99 (ms) per label


def row_stats(tested: Tested, i: int) -> dict[str, float | None]:
    """One slice's stats as a verdict lists them: each metric's means, delta and p, the p99s."""
    stats: dict[str, float | None] = {}
    for metric in CANARY_METRICS:
        stats[f"{metric}.canary"] = clean_float(float(tested.canary[metric][i, 1]))
        stats[f"{metric}.baseline"] = clean_float(float(tested.baseline[metric][i, 1]))
        stats[f"{metric}.delta"] = clean_float(float(tested.delta[metric][i]))
        stats[f"{metric}.p_value"] = clean_float(float(tested.p[metric][i]), 9)
    for arm, p99 in p99_of(tested, i).items():
        stats[f"latency_p99_ms.{arm}"] = p99
    return stats


def p99_of(tested: Tested, i: int) -> dict[str, float | None]:
    """Each arm's latency p99 (ms) of one slice; None where latency is not judged."""
    return {arm: clean_float(float(tested.p99[arm][i])) for arm in ARMS}


def row_summary(tested: Tested, i: int) -> dict[str, Any]:
    """One slice's comparison per metric, for the verdict's ``global``."""
    summary: dict[str, dict[str, Any]] = {
        metric: {
            "delta": clean_float(float(tested.delta[metric][i])),
            "p_value": clean_float(float(tested.p[metric][i]), 9),
            "confidence_bounds": [
                clean_float(float(tested.lower[metric][i])),
                clean_float(float(tested.upper[metric][i])),
            ],
            "n_canary": int(tested.canary[metric][i, 0]),
            "n_baseline": int(tested.baseline[metric][i, 0]),
            "regressed": bool(tested.regressed[metric][i]),
        }
        for metric in CANARY_METRICS
    }
    summary["log_latency"]["p99_ms"] = p99_of(tested, i)
    return summary


def slice_results(tested: Tested, paused: set[str]) -> list[SliceResult]:
    """Every slice's state and stats; ``paused``: slices the change look named."""
    # Column by column through tolist(): the same values as row_stats, without a numpy
    # scalar per cell (a verdict lists every slice: 1,000 x 14 cells at each close).
    columns: dict[str, list[float | None]] = {}
    for metric in CANARY_METRICS:
        for key, values, digits in (
            ("canary", tested.canary[metric][:, 1], 6),
            ("baseline", tested.baseline[metric][:, 1], 6),
            ("delta", tested.delta[metric], 6),
            ("p_value", tested.p[metric], 9),
        ):
            columns[f"{metric}.{key}"] = clean_floats(values, digits)
    for arm in ARMS:
        columns[f"latency_p99_ms.{arm}"] = clean_floats(tested.p99[arm])
    judged = any_metric(tested.judged).tolist()
    regressed = any_metric(tested.regressed)
    n = tested.canary["error_rate"][:, 0].astype(np.int64).tolist()
    out = []
    for i, (label, bad) in enumerate(zip(tested.labels, regressed.tolist(), strict=True)):
        state = "rollback" if bad else ("ok" if judged[i] else "insufficient")
        if label in paused and not bad:  # named by the change look
            state = "pause"
        stats = {name: column[i] for name, column in columns.items()}
        out.append(SliceResult(label, n[i], state, stats))
    return out


def describe(tested: Tested, metric: str, i: int) -> str:
    """One line for on-call: the effect, its bounds, its p-value and both arms' sizes."""
    delta = float(tested.delta[metric][i])
    baseline = float(tested.baseline[metric][i, 1])
    relative = f" ({delta / baseline:+.1%})" if baseline else ""
    low, high = float(tested.lower[metric][i]), float(tested.upper[metric][i])
    n_c, n_b = int(tested.canary[metric][i, 0]), int(tested.baseline[metric][i, 0])
    return (
        f"{metric} {delta:+.4g}{relative} vs baseline, "
        f"always-valid bounds [{low:.4g}, {high:.4g}], "
        f"p={float(tested.p[metric][i]):.2g}, n={n_c} canary / {n_b} baseline"
    )
