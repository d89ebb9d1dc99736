"""Reference judges: what a rollout guard without streamguard would conclude on the same traffic.

Both compare an *experiment* arm with the *control* arm (the primary) on global metrics, at a
fixed analysis interval of event time, and fail the rollout the first time a metric is worse:

* :class:`GlobalThresholdJudge` -- a threshold rule on the last interval's global value, what
  Argo Rollouts' or Flagger's metric analysis does with a Prometheus query (failure limit 0:
  the first failed check aborts). It ignores slices.
* :class:`KayentaJudge` -- Kayenta's canary judge: a Mann-Whitney U test per metric at a 98 %
  level (Kayenta's ``MannWhitneyClassifier``, the NetflixACAJudge default), every metric
  critical, re-judged at every interval on the window that has grown since the start, with no
  correction for the repeated looks.

The experiment arm is the canary when there is one, else the shadow. Canary metrics: error
rate (higher is worse), latency (higher is worse) and click-through rate (lower is worse;
a request counts once its outcome has had ``outcome_wait_s`` to arrive). Shadow metric: the
score (a difference either way is a deviation).

Examples
--------
>>> import numpy as np
>>> u, p = mann_whitney(np.array([1.0, 2, 3, 4]), np.array([5.0, 6, 7, 8]))
>>> u, round(p, 4)
(0.0, 0.0304)
"""

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "GlobalThresholdJudge",
    "Judgement",
    "KayentaJudge",
    "Observations",
    "mann_whitney",
]

_Float = npt.NDArray[np.float64]

#: Metric -> harmful direction: +1 higher is worse, -1 lower is worse, 0 either way.
DIRECTIONS = {"errors": 1, "latency_ms": 1, "ctr": -1, "score": 0}


def mann_whitney(x: _Float, y: _Float) -> tuple[float, float]:
    """Mann-Whitney U of ``x`` against ``y`` and its two-sided p-value.

    The normal approximation with the tie correction and the continuity correction, which is
    what :func:`scipy.stats.mannwhitneyu` computes with ``method="asymptotic"`` (Mann and
    Whitney, Ann. Math. Statist. 18(1), 1947; tie correction as in Hollander, Wolfe and Chicken,
    *Nonparametric Statistical Methods*, 3rd ed., 2014, sec. 4.1). Samples here hold thousands
    of values, where the exact distribution is not needed.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan
    pooled = np.concatenate([x, y])
    _, inverse, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # average rank of tied values
    u1 = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    ties = float((counts.astype(np.float64) ** 3 - counts).sum())
    variance = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:  # every value equal: no evidence of a difference
        return u1, 1.0
    mu = n1 * n2 / 2.0
    z = (max(u1, n1 * n2 - u1) - mu - 0.5) / math.sqrt(variance)
    return u1, min(1.0, math.erfc(z / math.sqrt(2.0)))


@dataclass(slots=True)
class _Arm:
    ts: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    error: list[float] = field(default_factory=list)
    click: list[float] = field(default_factory=list)

    def arrays(self, lo: float, hi: float, clicks_until: float) -> dict[str, _Float]:
        ts = np.asarray(self.ts)
        pick = (ts >= lo) & (ts < hi)
        out = {
            "score": np.asarray(self.score)[pick],
            "errors": np.asarray(self.error)[pick],
        }
        latency = np.asarray(self.latency)[pick]
        out["latency_ms"] = latency[~np.isnan(latency)]
        ripe = pick & (ts < clicks_until)
        out["ctr"] = np.asarray(self.click)[ripe]
        return out


class Observations:
    """The global per-arm measurements both judges read (a metrics store, in effect).

    Outcomes are joined to their request by id for ``join_s`` seconds of event time.
    """

    def __init__(self, join_s: float = 120.0) -> None:
        self.arms: dict[str, _Arm] = {}
        self.join_s = join_s
        self._served: dict[str, tuple[_Arm, int]] = {}
        self._expiry: deque[tuple[float, str]] = deque()

    def add(self, events: list[dict[str, Any]]) -> None:
        """Record one second of events (predictions and outcomes)."""
        latest = -math.inf
        for event in events:
            kind = event.get("kind")
            if kind == "prediction":
                arm = self.arms.setdefault(event["role"], _Arm())
                ts = float(event["ts"])
                latest = max(latest, ts)
                arm.ts.append(ts)
                arm.score.append(float(event["score"]))
                arm.latency.append(float(event.get("latency_ms", math.nan)))
                arm.error.append(1.0 if event.get("error") else 0.0)
                arm.click.append(0.0)
                if event["role"] != "shadow":
                    self._served[event["request_id"]] = (arm, len(arm.click) - 1)
                    self._expiry.append((ts, event["request_id"]))
            elif kind == "outcome":
                served = self._served.get(event["request_id"])
                if served is not None:
                    served[0].click[served[1]] = 1.0
        while self._expiry and self._expiry[0][0] < latest - self.join_s:
            self._served.pop(self._expiry.popleft()[1], None)

    def experiment(self) -> str | None:
        """The arm judged against the primary: the canary if any, else the shadow."""
        for role in ("canary", "shadow"):
            if role in self.arms and "primary" in self.arms:
                return role
        return None

    def metrics(self, role: str, lo: float, hi: float, wait_s: float) -> dict[str, _Float]:
        """The arm's values per metric for events in ``[lo, hi)``."""
        arm = self.arms.get(role, _Arm())
        return arm.arrays(lo, hi, hi - wait_s)


@dataclass(frozen=True, slots=True)
class Judgement:
    """A failed analysis: when, on which metric, and the numbers behind it."""

    at: float  # event time of the interval's end
    metric: str
    experiment: float
    control: float
    p_value: float | None = None


def _compared(
    obs: Observations, lo: float, hi: float, wait_s: float, min_n: int
) -> Iterator[tuple[str, _Float, _Float]]:
    """(metric, experiment values, primary values) for each metric both arms have enough of."""
    role = obs.experiment()
    if role is None:
        return
    exp = obs.metrics(role, lo, hi, wait_s)
    ctl = obs.metrics("primary", lo, hi, wait_s)
    for metric in ("score",) if role == "shadow" else ("errors", "latency_ms", "ctr"):
        if len(exp[metric]) >= min_n and len(ctl[metric]) >= min_n:
            yield metric, exp[metric], ctl[metric]


@dataclass(slots=True)
class GlobalThresholdJudge:
    """Fails when the last interval's global metric crosses a threshold against the primary.

    Thresholds: error rate above ``error_ratio`` times the primary's (and above it by 0.5
    points), mean latency above ``latency_ratio`` times, CTR below ``ctr_ratio`` times, and a
    mean score difference beyond ``score_delta``. Each arm needs ``min_n`` values.
    """

    name: str = "global-threshold"
    interval_s: float = 60.0
    error_ratio: float = 2.0
    latency_ratio: float = 1.2
    ctr_ratio: float = 0.8
    score_delta: float = 0.05
    min_n: int = 100
    outcome_wait_s: float = 30.0

    def judge(self, obs: Observations, start: float, end: float) -> Judgement | None:
        """The failure of the interval ending at ``end``, if any."""
        lo = end - self.interval_s
        for metric, e, c in _compared(obs, lo, end, self.outcome_wait_s, self.min_n):
            me, mc = float(e.mean()), float(c.mean())
            if self._worse(metric, me, mc):
                return Judgement(end, metric, me, mc)
        return None

    def _worse(self, metric: str, e: float, c: float) -> bool:
        if metric == "errors":
            return e > self.error_ratio * c and e > c + 0.005
        if metric == "latency_ms":
            return e > self.latency_ratio * c
        if metric == "ctr":
            return e < self.ctr_ratio * c
        return abs(e - c) > self.score_delta


@dataclass(slots=True)
class KayentaJudge:
    """Mann-Whitney U per metric at ``1 - alpha`` (98 %), on everything since ``start``.

    A metric fails when its p-value is below ``alpha`` and the experiment's mean is on the
    harmful side (Kayenta's classifier checks the direction the metric is configured for).
    Every metric is critical, so one failed metric fails the analysis.
    """

    name: str = "kayenta"
    interval_s: float = 60.0
    alpha: float = 0.02
    min_n: int = 100
    outcome_wait_s: float = 30.0

    def judge(self, obs: Observations, start: float, end: float) -> Judgement | None:
        """The failure of the look at ``end`` (window ``[start, end)``), if any."""
        for metric, e, c in _compared(obs, start, end, self.outcome_wait_s, self.min_n):
            _, p = mann_whitney(e, c)
            me, mc = float(e.mean()), float(c.mean())
            direction = DIRECTIONS[metric]
            harmful = direction == 0 or (me - mc) * direction > 0
            if p < self.alpha and harmful:
                return Judgement(end, metric, me, mc, p)
        return None
