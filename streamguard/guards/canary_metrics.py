"""What the canary guard's two looks share: metric moments, test levels, and the rest test.

The cumulative look (:mod:`streamguard.guards.canary`) and the change look
(:mod:`streamguard.guards.canary_change`) judge the same metrics from the same arm arrays;
they differ in which windows they sum.
"""

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from streamguard.core.summary import Array, subtract_fields, sum_rows
from streamguard.guards.cumulative import Cumulative
from streamguard.guards.explain import Rest
from streamguard.policy import CANARY_METRICS, CanaryPolicy
from streamguard.stats import msprt

__all__ = ["ARM_FIELDS", "any_metric", "harmful", "levels", "metric_moments", "rest_judge"]

F64 = npt.NDArray[np.float64]
#: The arm fields the metrics are made of.
ARM_FIELDS = frozenset({"events", "errors", "latency", "outcomes"})


def metric_moments(arrays: dict[str, Array]) -> dict[str, F64]:
    """(n, mean, m2) of every canary metric for each row of arm arrays."""
    events = arrays["events"].astype(np.float64)
    errors = arrays["errors"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(events > 0, errors / np.maximum(events, 1), 0.0)
    # A 0/1 variable with mean p over n observations has m2 = n p (1 - p).
    error_moments = np.stack([events, rate, events * rate * (1 - rate)], axis=-1)
    return {
        "outcome_rate": np.asarray(arrays["outcomes"], dtype=np.float64),
        "error_rate": error_moments,
        "log_latency": np.asarray(arrays["latency"], dtype=np.float64),
    }


def harmful(delta: npt.ArrayLike, worse: str) -> npt.NDArray[np.bool_]:
    """Where a canary-minus-baseline difference is on the harmful side (NaN: nowhere)."""
    d = np.asarray(delta, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(d < 0 if worse == "lower" else d > 0)


def any_metric(flags: dict[str, npt.NDArray[np.bool_]]) -> npt.NDArray[np.bool_]:
    """Per label: whether any canary metric is flagged."""
    return np.asarray(np.any(np.stack([flags[m] for m in CANARY_METRICS]), axis=0))


def levels(settings: CanaryPolicy) -> tuple[float, float]:
    """Per-test level of the whole deployment's metrics, and the slices' BH level."""
    return settings.alpha / (2 * len(CANARY_METRICS)), settings.alpha / 2


def rest_judge(
    canary: Cumulative,
    baseline: Cumulative,
    tau: Callable[[str, str], float],
    settings: CanaryPolicy,
) -> Callable[[str, list[str]], Rest]:
    """``rest(parent, children)`` for :func:`~streamguard.guards.explain.explain`.

    What the parent shows without these children, from the totals in ``canary`` and
    ``baseline``, by a fresh (instantaneous) test at the slices' level.
    """
    fields = canary.fields

    def rest(parent: str, children: list[str]) -> Rest:
        arms = []
        for cumulative in (canary, baseline):
            rows = cumulative.take([parent, *children])
            whole = {k: v[:1] for k, v in rows.items()}
            parts = sum_rows(fields, rows, list(range(1, len(children) + 1)))
            arms.append(metric_moments(subtract_fields(fields, whole, parts)))
        judged, leaning = 0, False
        for metric in CANARY_METRICS:
            c, b = arms[0][metric], arms[1][metric]
            if min(c[0, 0], b[0, 0]) < settings.min_samples:
                continue
            judged += 1
            scale = tau(parent, metric)
            result = msprt(c, b, scale)
            delta = float(result.delta[0])
            if harmful(delta, settings.metrics[metric].worse) and (
                abs(delta) >= settings.practical_fraction * scale
            ):
                if float(result.p_value[0]) <= levels(settings)[1]:
                    return "elevated"
                leaning = True  # bad-looking but not proven: cannot be called clean
        return "clean" if judged and not leaning else "unknown"

    return rest
