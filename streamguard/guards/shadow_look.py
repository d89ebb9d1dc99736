"""The shadow guard's statistics over some windows, judged and explained: one *look*.

The guard (:mod:`streamguard.guards.shadow`) takes two looks at a version's pairs, the whole
horizon and the last few windows; each computes the statistics per slice
(:func:`shadow_statistics`), judges them against the policy's bands, and names the smallest
slices that explain a breach, with the short look's extra care about slices it cannot resolve.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamguard.core.measures import PairMeasures
from streamguard.core.slices import ROOT
from streamguard.core.summary import Array, remainders
from streamguard.guards.explain import Rest, explain
from streamguard.policy import SHADOW_STATISTICS, DeploymentPolicy
from streamguard.stats import js_distance, psi, quantile_groups, regroup

__all__ = [
    "CLEAN_FRACTION",
    "RESOLVE_FRACTION",
    "SHORT_REST_FRACTION",
    "Look",
    "bands_for",
    "shadow_statistics",
]

F64 = npt.NDArray[np.float64]
#: A complement counts as healthy only when every statistic stays below this fraction of its
#: pause threshold; a child that narrowly missed its own threshold must not pass as healthy.
CLEAN_FRACTION = 0.5
#: The short look judges a rest smaller than ``min_pairs`` on its two means against their
#: pause thresholds themselves: at a few hundred pairs a healthy slice's flip rate alone
#: reaches half its threshold by chance (Android/EU/premium, 389 pairs: 0.51-0.62 of it while
#: healthy), which made the short look name the whole of Android/EU for a shift in its free
#: tier. Below the threshold, the rest does not explain the breach; the firing part does.
SHORT_REST_FRACTION = 1.0


def shadow_statistics(
    arrays: dict[str, Array], measures: PairMeasures, psi_groups: int
) -> dict[str, F64]:
    """Every statistic of the guard for each row of pair-stream arrays."""
    n = arrays["pairs"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        flip_rate = arrays["flips"] / n
        mean_abs_dev = np.where(n > 0, arrays["dev"][:, 1], np.nan)
    primary = arrays["primary_hist"]
    groups = quantile_groups(primary, psi_groups)
    reference = regroup(primary, groups, psi_groups)
    current = regroup(arrays["shadow_hist"], groups, psi_groups)
    return {
        "mean_abs_dev": mean_abs_dev,
        "p95_abs_dev": measures.deviations.quantile(arrays["dev_sketch"], 0.95),
        "flip_rate": flip_rate,
        "psi": psi(reference, current),
        "js_distance": js_distance(reference, current),
    }


@dataclass(slots=True)
class _Judged:
    stats: dict[str, F64]
    severity: npt.NDArray[np.int64]
    worst: list[str]  # per row: the statistic that sets its severity
    ratio: list[float]  # per row: that statistic over its pause threshold


def bands_for(policy: DeploymentPolicy, labels: list[str]) -> F64:
    """Thresholds per row: shape (rows, statistics, 2) with pause and rollback."""
    out = np.empty((len(labels), len(SHADOW_STATISTICS), 2))
    for j, name in enumerate(SHADOW_STATISTICS):
        band = policy.shadow.thresholds[name]
        out[:, j] = (band.pause, band.rollback)
    for i, label in enumerate(labels):
        override = policy.shadow_slice_thresholds.get(label)
        if override:
            for j, name in enumerate(SHADOW_STATISTICS):
                custom = override.get(name)
                if custom is not None:
                    out[i, j] = (custom.pause, custom.rollback)
    return out


def _judge(stats: dict[str, F64], bands: F64, enough: npt.NDArray[np.bool_]) -> _Judged:
    values = np.stack([stats[name] for name in SHADOW_STATISTICS], axis=1)
    finite = np.isfinite(values)
    safe = np.where(finite, values, -np.inf)
    level = (safe >= bands[:, :, 0]).astype(np.int64) + (safe >= bands[:, :, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(finite, values / np.maximum(bands[:, :, 0], 1e-12), -np.inf)
    # The statistic that matters: highest level first, then furthest past its pause threshold.
    score = level * 1e6 + np.minimum(ratio, 1e5)
    worst_index = np.argmax(score, axis=1)
    severity = np.where(enough, level.max(axis=1), 0)
    worst_ratio = np.take_along_axis(ratio, worst_index[:, None], axis=1)[:, 0]
    return _Judged(
        stats, severity, [SHADOW_STATISTICS[j] for j in worst_index], worst_ratio.tolist()
    )


#: Children with fewer pairs than this share of ``min_pairs`` say nothing about a slice's split.
RESOLVE_FRACTION = 0.2
_MAD = SHADOW_STATISTICS.index("mean_abs_dev")
_FLIP = SHADOW_STATISTICS.index("flip_rate")


@dataclass(slots=True)
class Look:
    """The guard's statistics over some windows: the whole horizon, or only the last ones."""

    name: str  # "horizon" or "recent"
    windows: int
    labels: list[str]
    arrays: dict[str, Array]
    rows: npt.NDArray[np.intp]  # the row of ``arrays`` that holds each label
    n: Array
    enough: npt.NDArray[np.bool_]
    bands: F64
    judged: _Judged
    index: dict[str, int]
    policy: DeploymentPolicy
    measures: PairMeasures

    @classmethod
    def of(
        cls,
        name: str,
        windows: int,
        summed: tuple[list[str], dict[str, Array]],
        policy: DeploymentPolicy,
        measures: PairMeasures,
    ) -> "Look | None":
        """The look at ``summed`` (labels, arrays), or None when no slice has a pair."""
        labels, arrays = summed
        present = np.flatnonzero(arrays["pairs"] > 0)
        if not len(present):
            return None
        # Rows are in first-seen order, which depends on flush timing; labels are not.
        present = present[np.argsort([labels[i] for i in present.tolist()], kind="stable")]
        labels = [labels[i] for i in present.tolist()]
        groups = policy.shadow.psi_groups
        if len(present) == len(arrays["pairs"]):
            # Every row has pairs: the statistics (row by row) on the arrays as they are, then
            # put in label order, rather than copying every histogram into it first (0.5 s of
            # 17 at a close of 10 deployments of 1,430 labels each).
            rows = present
            stats = {k: v[rows] for k, v in shadow_statistics(arrays, measures, groups).items()}
        else:
            arrays = {k: v[present] for k, v in arrays.items()}
            rows = np.arange(len(present))
            stats = shadow_statistics(arrays, measures, groups)
        n = arrays["pairs"][rows]
        enough = n >= policy.shadow.min_pairs
        bands = bands_for(policy, labels)
        judged = _judge(stats, bands, enough)
        if name == "recent":  # a short look pauses; only the whole horizon rolls back
            judged.severity = np.minimum(judged.severity, 1)
        index = {label: i for i, label in enumerate(labels)}
        return cls(
            name, windows, labels, arrays, rows, n, enough, bands, judged, index, policy, measures
        )

    def severity_of(self, labels: list[str]) -> int:
        """The highest severity among ``labels`` (0 for none)."""
        return max((int(self.judged.severity[self.index[label]]) for label in labels), default=0)

    def explain(self) -> list[str]:
        """The smallest slices that explain this look's breaches."""
        judged, labels = self.judged, self.labels
        firing_rows = np.flatnonzero(judged.severity > 0).tolist()
        if not firing_rows:
            return []
        firing = {labels[i] for i in firing_rows}
        strength = {labels[i]: judged.ratio[i] for i in firing_rows}
        return explain(labels, firing, lambda p, c: self._rests([(p, c)])[0], strength, self._rests)

    def resolved(self, label: str) -> bool:
        """Whether this look can tell that all of ``label`` deviates, not only a part of it.

        A short look has too few pairs in most children to judge them, so the descent of
        :func:`~streamguard.guards.explain.explain` stops early and would name a broad slice
        (``*``) for a deviation in one of its children (Android). So a slice counts as
        resolved only when, along every further dimension, each child with at least
        ``RESOLVE_FRACTION`` of ``min_pairs`` pairs is itself not clean: its mean absolute
        deviation or flip rate at ``CLEAN_FRACTION`` of their pause thresholds or above. Those
        two are means, nearly unbiased at a hundred pairs (PSI, JS and the p95 are not, and
        are left out). Otherwise the horizon names the slice as it fills.
        """
        own = frozenset() if label == ROOT else frozenset(label.split(","))
        own_dims = {item.split("=", 1)[0] for item in own}
        floor = self._resolve_floor()
        level = np.fmax(
            self.judged.stats["mean_abs_dev"] / self.bands[:, _MAD, 0],
            self.judged.stats["flip_rate"] / self.bands[:, _FLIP, 0],
        )
        for child, i in self.index.items():
            items = frozenset() if child == ROOT else frozenset(child.split(","))
            if len(items) != len(own) + 1 or not own < items or self.n[i] < floor:
                continue
            (extra,) = items - own
            if extra.split("=", 1)[0] not in own_dims and not level[i] >= CLEAN_FRACTION:
                return False  # a clean part: the deviation is narrower than ``label``
        return True

    def _resolve_floor(self) -> int:
        return max(1, int(RESOLVE_FRACTION * self.policy.shadow.min_pairs))

    def _rests(self, questions: list[tuple[str, list[str]]]) -> list[Rest]:
        """Each ``(parent, children)``: is ``parent`` without ``children`` clean (explain)?

        All questions in one :func:`~streamguard.core.summary.remainders` and one
        :func:`shadow_statistics` call: one at a time, at ~0.3 ms each, they were most of a
        window's close at 20 deployments (benchmarks/HISTORY.md).
        """
        index, shadow, at = self.index, self.policy.shadow, self.rows.tolist()
        parents = [index[parent] for parent, _ in questions]
        queries = [(at[index[p]], [at[index[c]] for c in children]) for p, children in questions]
        remainder = remainders(self.measures.fields, self.arrays, queries)
        stats = shadow_statistics(remainder, self.measures, shadow.psi_groups)
        bands = self.bands[parents, :, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = np.stack([stats[name] for name in SHADOW_STATISTICS], axis=1) / bands
        # The short look judges a small rest on its two unbiased means (see ``resolved``);
        # the horizon waits until the rest is large enough for every statistic.
        short = np.fmax(ratios[:, _MAD], ratios[:, _FLIP])
        worst = np.max(np.where(np.isfinite(ratios), ratios, 0.0), axis=1)
        floor = self._resolve_floor() if self.name == "recent" else None
        answers: list[Rest] = []
        for i, pairs in enumerate(remainder["pairs"].tolist()):
            if pairs >= shadow.min_pairs:
                answers.append("clean" if worst[i] < CLEAN_FRACTION else "elevated")
            elif floor is None or pairs < floor:
                answers.append("unknown")  # too little left to tell whether the rest is healthy
            else:
                answers.append("clean" if short[i] < SHORT_REST_FRACTION else "elevated")
        return answers
