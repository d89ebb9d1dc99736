"""Stratification guard: does the canary see the same traffic mix as the baseline?

A canary that the load balancer routes only to iOS users in North America (or only to premium
subscribers) looks healthy because those users are, and its verdicts say nothing about
everyone else. Since the canary version (and allocation) started, cumulatively, this guard
compares the canary's slice mix with the baseline's (primary's) mix of the same deployment,
for every slice dimension and for the full combination:

- a sequential sample-ratio-mismatch test valid under continuous monitoring: the
  Dirichlet-multinomial Bayes factor of Lindon & Malek ("Anytime-Valid Inference for
  Multinomial Count Data", arXiv 2011.03567), ``p_t = min_{s<=t} 1/BF_s``, so once detected it
  stays detected. The baseline's shares are estimated (plug-in, smoothed by half a count), a
  fair approximation while the baseline is much larger than the canary;
- an effect-size floor: the total variation distance between the mixes must reach ``tv_floor``
  so that huge traffic does not flag harmless skews;
- coverage: the population share of slices where the canary has (almost) no traffic, named;
- Pearson residuals ``(O - E)/sqrt(E)`` that say which slices are over- or under-represented.

A contaminated canary gets ``pause`` with the evidence. At every window close the guard also
records its judgement of the allocation (:func:`allocation_status`): ``insufficient`` below
``min_canary_events``, then ``contaminated`` or ``stratified``. The canary guard, which judges
after it at the same close, marks its own verdicts untrusted unless the allocation is
``stratified``, so a canary is never called healthy before its mix could be checked.
"""

from typing import Any

import numpy as np

from streamguard.core.slices import label_dims
from streamguard.core.summary import Field
from streamguard.core.verdict import Finding, GuardContext, SliceResult, Verdict, clean_float
from streamguard.guards.cumulative import Cumulative
from streamguard.policy import DeploymentPolicy
from streamguard.stats import pearson_residuals, running_p, srm_p_value, total_variation

__all__ = [
    "BASELINE_STREAM",
    "CANARY_STREAM",
    "StratificationGuard",
    "allocation_status",
    "split_version",
]

NAME = "stratification"
CANARY_STREAM = "arm:canary"
BASELINE_STREAM = "arm:primary"
_COUNTS = (Field("events", "count"),)


def split_version(key: str) -> tuple[str, str]:
    """``"ranker-v43@alloc-2"`` -> ``("ranker-v43", "alloc-2")``; no allocation -> ``""``."""
    version, _, allocation = key.partition("@")
    return version, allocation


def allocation_status(state: dict[Any, Any], key: str) -> str | None:
    """The stratification guard's judgement of a canary allocation at its latest window close.

    Parameters
    ----------
    state : dict
        The stratification guard's per-deployment state (``ctx.state("stratification")``).
    key : str
        Canary version and allocation, as :func:`split_version` takes it.

    Returns
    -------
    str or None
        ``"insufficient"`` (fewer than ``min_canary_events`` canary events: the mix cannot be
        judged yet), ``"contaminated"`` or ``"stratified"``; None if ``key`` was never judged.
    """
    status: str | None = state.get("status", {}).get(key)
    return status


class _State:
    """Cumulative counts and running p-values of one canary version (and allocation)."""

    def __init__(self) -> None:
        self.canary = Cumulative(_COUNTS)
        self.baseline = Cumulative(_COUNTS)
        self.p: dict[str, float] = {}
        self.windows = 0


def _p_value(result: dict[str, Any]) -> float:
    # Not ``p or 1.0``: huge traffic drives the p-value to 0.0, the strongest evidence.
    p = result["p_value"]
    return 1.0 if p is None else float(p)


def _level_labels(labels: set[str], dims: tuple[str, ...]) -> list[str]:
    wanted = set(dims)
    return sorted(label for label in labels if set(label_dims(label)) == wanted)


class StratificationGuard:
    """Judges the canary's traffic mix at every window close; see the module docstring."""

    name = NAME

    def __init__(self, policy_for: Any) -> None:
        self._policy_for = policy_for

    def evaluate(self, ctx: GuardContext) -> Verdict | None:
        """Verdict on the most recent canary version with data, or None without a canary."""
        policy: DeploymentPolicy = self._policy_for(ctx.deployment)
        settings = policy.stratification
        canaries = ctx.versions(CANARY_STREAM)
        baselines = ctx.versions(BASELINE_STREAM)
        if not settings.enabled or not canaries or not baselines:
            return None
        key = canaries[0]
        states: dict[str, _State] = ctx.state(NAME).setdefault("versions", {})
        state = states.setdefault(key, _State())
        self._accumulate(ctx, state, key, baselines[0])
        dims = tuple(sorted(policy.slices.dimensions))
        tests = [(dim, (dim,)) for dim in dims] + ([("joint", dims)] if len(dims) > 1 else [])
        known = set(state.canary.labels) | set(state.baseline.labels)
        results: dict[str, dict[str, Any]] = {}
        slices: list[SliceResult] = []
        for name, level in tests:
            labels = _level_labels(known, level)
            if len(labels) < 2:
                continue
            result = self._test(state, name, labels, settings)
            results[name] = result
            slices.extend(result.pop("slices"))
        total = int(state.canary.take(["*"])["events"][0])
        contaminated, finding = self._decide(results, total, settings)
        status = (
            "insufficient"
            if total < settings.min_canary_events
            else ("contaminated" if contaminated else "stratified")
        )
        ctx.state(NAME).setdefault("status", {})[key] = status
        version, allocation = split_version(key)
        start = float(ctx.window * ctx.window_s)
        return Verdict(
            deployment=ctx.deployment,
            guard=NAME,
            model_version=version,
            baseline_version=baselines[0],
            window_start=start,
            window_end=start + ctx.window_s,
            horizon_start=float((ctx.window - state.windows + 1) * ctx.window_s),
            slices=slices,
            findings=[finding] if finding else [],
            extra={
                "allocation": allocation,
                "canary_events": total,
                "status": status,
                "tests": results,
            },
        )

    @staticmethod
    def snapshot_state(state: dict[Any, Any]) -> Any:
        """Cumulative counts, running p-values and judgement per canary version."""
        return {
            "versions": {
                key: {
                    "canary": s.canary.snapshot(),
                    "baseline": s.baseline.snapshot(),
                    "p": s.p,
                    "windows": s.windows,
                }
                for key, s in state.get("versions", {}).items()
            },
            "status": dict(state.get("status", {})),
        }

    @staticmethod
    def restore_state(data: Any) -> dict[Any, Any]:
        """State saved by :meth:`snapshot_state`."""
        versions = {}
        for key, saved in data["versions"].items():
            restored = _State()
            restored.canary = Cumulative.restore(saved["canary"])
            restored.baseline = Cumulative.restore(saved["baseline"])
            restored.p = {k: float(v) for k, v in saved["p"].items()}
            restored.windows = int(saved["windows"])
            versions[key] = restored
        status = dict(data.get("status", {}))
        # Older snapshots kept only contamination; a key not known contaminated stays unjudged
        # (untrusted) until the next close rewrites it, which it does before the canary reads.
        for key, contaminated in data.get("contaminated", {}).items():
            if contaminated:
                status.setdefault(key, "contaminated")
        return {"versions": versions, "status": status}

    @staticmethod
    def _accumulate(ctx: GuardContext, state: _State, key: str, baseline: str) -> None:
        canary = ctx.closed_window(CANARY_STREAM, key)
        if canary is None:
            return  # the baseline accumulates over the canary's windows only
        state.windows += 1
        state.canary.add(*canary)
        closed = ctx.closed_window(BASELINE_STREAM, baseline)
        if closed is not None:
            state.baseline.add(*closed)

    @staticmethod
    def _test(state: _State, name: str, labels: list[str], settings: Any) -> dict[str, Any]:
        observed = state.canary.take(labels)["events"].astype(np.float64)
        baseline = state.baseline.take(labels)["events"].astype(np.float64)
        p0 = (baseline + 0.5) / (baseline + 0.5).sum()
        n = float(observed.sum())
        if n > 0:
            p_now = float(srm_p_value(observed, p0, settings.concentration))
            state.p[name] = float(running_p(state.p.get(name, 1.0), p_now))
            tv = float(total_variation(p0, observed))
            residuals = pearson_residuals(observed, p0)
        else:
            tv, residuals = 0.0, np.zeros(len(labels))
        share = observed / n if n else np.zeros(len(labels))
        uncovered = (share < settings.uncovered_share * p0) & (
            n * p0 >= settings.uncovered_min_expected
        )
        order = np.argsort(residuals)
        slices = []
        for i, label in enumerate(labels):
            if n < settings.min_canary_events:
                status = "insufficient"
            elif uncovered[i]:
                status = "uncovered"
            else:
                status = "over" if residuals[i] > 3 else ("under" if residuals[i] < -3 else "ok")
            stats = {
                "canary_share": clean_float(float(share[i])),
                "baseline_share": clean_float(float(p0[i])),
                "residual": clean_float(float(residuals[i])),
            }
            slices.append(SliceResult(label, int(observed[i]), status, stats))
        return {
            "p_value": clean_float(state.p.get(name, 1.0), 9),
            "total_variation": clean_float(tv),
            "canary_events": int(n),
            "under": [labels[i] for i in order[:3].tolist() if residuals[i] < -3],
            "over": [labels[i] for i in order[::-1][:3].tolist() if residuals[i] > 3],
            "uncovered": [
                {"slice": labels[i], "population_share": clean_float(float(p0[i]))}
                for i in np.argsort(-p0).tolist()
                if uncovered[i]
            ],
            "uncovered_weight": clean_float(float(p0[uncovered].sum())),
            "slices": slices,
        }

    @staticmethod
    def _decide(
        results: dict[str, dict[str, Any]], total: int, settings: Any
    ) -> tuple[bool, Finding | None]:
        if total < settings.min_canary_events or not results:
            return False, None
        # Each dimension and the joint mix is its own test: Bonferroni keeps the family at alpha.
        level = settings.alpha / len(results)
        mismatched = [
            name
            for name, r in results.items()
            if _p_value(r) <= level and (r["total_variation"] or 0.0) >= settings.tv_floor
        ]
        joint = results.get("joint") or next(iter(results.values()))
        uncovered_weight = joint["uncovered_weight"] or 0.0
        if not mismatched and uncovered_weight < settings.max_uncovered_weight:
            return False, None
        if uncovered_weight >= settings.max_uncovered_weight:
            statistic, value, threshold = (
                "uncovered_weight",
                uncovered_weight,
                settings.max_uncovered_weight,
            )
        else:
            worst = min(mismatched, key=lambda name: _p_value(results[name]))
            statistic, value, threshold = f"srm_p_value[{worst}]", results[worst]["p_value"], level
        return True, Finding(
            slice="*",
            action="pause",
            statistic=statistic,
            value=value,
            threshold=threshold,
            n=total,
            stats={f"{name}.p_value": r["p_value"] for name, r in results.items()}
            | {f"{name}.total_variation": r["total_variation"] for name, r in results.items()},
            thresholds={
                "srm_p_value": {"pause": level, "rollback": 0.0},
                "total_variation": {"pause": settings.tv_floor, "rollback": 1.0},
                "uncovered_weight": {"pause": settings.max_uncovered_weight, "rollback": 1.0},
            },
            extra={
                "summary": (
                    f"{uncovered_weight:.0%} of the population has (almost) no canary traffic"
                    + (f"; mix differs in {', '.join(mismatched)}" if mismatched else "")
                ),
                "mismatched_mixes": mismatched,
                "uncovered": joint["uncovered"],
                "uncovered_weight": uncovered_weight,
                "over_represented": joint["over"],
                "under_represented": joint["under"],
                "trusted": False,
                "message": (
                    "the canary's traffic is not stratified like the baseline's; its verdicts "
                    "cannot be trusted until the allocation is fixed"
                ),
            },
        )
