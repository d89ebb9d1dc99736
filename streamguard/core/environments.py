"""Execution environments: scores per fingerprint and slice, and paired differences.

Prediction events may carry ``env_fingerprint`` (hardware, driver, numeric libraries). Stage 1
keeps two streams per (deployment, model version, window) for the non-determinism guard:

- ``env``: every prediction with a fingerprint (any role, except failed ones whose score is a
  fallback), one row per (fingerprint, stratum), the stratum being the event's finest tracked
  slice (the full combination by default). Per row: events and the moments of the score. The
  guard compares fingerprints stratum by stratum (post-stratification), so fingerprints that
  serve different slice mixes are compared like for like;
- ``env_pair``: primary/shadow pairs of the *same* model version in *different* environments,
  one row per unordered fingerprint pair ``(a, b)``, ``a < b``. Per row: pairs, moments of
  ``d = score(a) − score(b)`` and of ``|d|``, and the pairs with ``|d| > tolerance``.

Row labels are JSON arrays (``["gpu=a100", "platform=ios,region=eu,tier=free"]``), which
parse back unambiguously whatever characters a fingerprint holds. Row ``~overflow`` holds the
events of fingerprints beyond ``max_fingerprints`` (the first ones in sorted order keep their
rows); only its event count is meaningful. A batch is reduced with ``np.unique`` and
``np.bincount``, labels are built per distinct row, never per event.

Examples
--------
>>> import numpy as np
>>> m = EnvMeasures.from_policy(DeterminismPolicy(max_fingerprints=2))
>>> rows, labels = m.score_rows(["b", "a", "c", "a"], np.array([0, 0, 0, 1]), ["s0", "s1"])
>>> rows.tolist(), labels
([3, 1, 0, 2], ['~overflow', '["a","s0"]', '["a","s1"]', '["b","s0"]'])
>>> out = m.pair_contributions(["a", "b"], ["b", "a"], np.array([0.5, 0.2]), np.array([0.25, 0.2]))
>>> out[1], out[0]["diff"].tolist(), out[0]["beyond"].tolist()
(['~overflow', '["a","b"]'], [[0.0, 0.0, 0.0], [2.0, 0.125, 0.03125]], [0, 1])
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from streamguard.core.summary import Array, Field
from streamguard.policy import DeterminismPolicy
from streamguard.stats import moments_by_group

__all__ = [
    "ENV_PAIR_STREAM",
    "ENV_STREAM",
    "ENV_STREAMS",
    "OVERFLOW_ROW",
    "EnvMeasures",
    "admitted",
    "cell_label",
    "parse_cell",
]

#: Stream of scores per (fingerprint, stratum).
ENV_STREAM = "env"
#: Stream of paired differences per fingerprint pair (same model version).
ENV_PAIR_STREAM = "env_pair"
ENV_STREAMS = (ENV_STREAM, ENV_PAIR_STREAM)
#: Label of the row holding the events of fingerprints beyond the cap.
OVERFLOW_ROW = "~overflow"

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def cell_label(first: str, second: str) -> str:
    """Row label of (fingerprint, stratum) or of a fingerprint pair."""
    return orjson.dumps([first, second]).decode()


def parse_cell(label: str) -> tuple[str, str] | None:
    """The two parts of a :func:`cell_label` (None for ``~overflow``).

    Raises
    ------
    ValueError
        When ``label`` is not such a label (stage 2 checks a partial's labels with this).
    """
    if label == OVERFLOW_ROW:
        return None
    cell = orjson.loads(label)
    if not (type(cell) is list and len(cell) == 2 and {type(part) for part in cell} == {str}):
        raise ValueError(f"{label!r:.60} is not an environment label (two strings)")
    return cell[0], cell[1]


def admitted(known: list[str], labels: list[str], limit: int, paired: bool) -> list[bool]:
    """Which ``labels`` fit within ``limit`` fingerprints, given the ``known`` labels' ones.

    Fingerprints are admitted in order of arrival: a label is admitted when every fingerprint
    it names is already admitted or there is room for it. For ``env`` labels the fingerprint
    is the first part; for ``env_pair`` labels (``paired``) both parts are fingerprints.
    """

    def fingerprints(label: str) -> tuple[str, ...]:
        cell = parse_cell(label)
        if cell is None:
            return ()
        return cell if paired else cell[:1]

    seen = {fp for label in known for fp in fingerprints(label)}
    out = []
    for label in labels:
        names = set(fingerprints(label))
        fits = len(seen | names) <= limit
        if fits:
            seen |= names
        out.append(label == OVERFLOW_ROW or fits)
    return out


def _codes(names: list[str], limit: int) -> tuple[I64, list[str]]:
    """Code of each name among the sorted distinct names; codes >= ``limit`` overflow."""
    distinct, inverse = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    return inverse.astype(np.int64).ravel(), distinct.tolist()[:limit]


@dataclass(frozen=True, slots=True)
class EnvMeasures:
    """Measurements of the ``env`` and ``env_pair`` streams, fixed by the determinism policy."""

    tolerance: float
    max_fingerprints: int

    @classmethod
    def from_policy(cls, policy: DeterminismPolicy) -> "EnvMeasures":
        """Tolerance and fingerprint cap of a determinism policy."""
        return cls(policy.tolerance, policy.max_fingerprints)

    @staticmethod
    def fields_of(stream: str) -> tuple[Field, ...]:
        """Summary fields of ``env`` or ``env_pair``."""
        if stream == ENV_STREAM:
            return (Field("events", "count"), Field("score", "moments"))
        return (
            Field("events", "count"),
            Field("diff", "moments"),  # of score(a) - score(b), a < b
            Field("abs_diff", "moments"),
            Field("beyond", "count"),  # pairs with |d| > tolerance
        )

    def score_rows(
        self, fingerprints: list[str], strata: I64, stratum_labels: list[str]
    ) -> tuple[I64, list[str]]:
        """Row of each event for a fresh group, and the labels (``~overflow`` first).

        ``strata`` holds each event's position in ``stratum_labels``.
        """
        codes, names = _codes(fingerprints, self.max_fingerprints)
        width = len(stratum_labels)
        keys = np.where(codes < len(names), codes * width + strata, -1)
        distinct, inverse = np.unique(keys, return_inverse=True)
        cells = distinct[distinct >= 0].tolist()
        labels = [
            OVERFLOW_ROW,
            *(cell_label(names[k // width], stratum_labels[k % width]) for k in cells),
        ]
        shift = 0 if len(distinct) and distinct[0] < 0 else 1
        return inverse.astype(np.int64).ravel() + shift, labels

    def score_contributions(self, rows: I64, n_rows: int, scores: F64) -> dict[str, Array]:
        """Per-row events and score moments."""
        events = np.bincount(rows, minlength=n_rows).astype(np.int64, copy=False)
        return {"events": events, "score": moments_by_group(scores, rows, n_rows)}

    def pair_contributions(
        self, primary_env: list[str], shadow_env: list[str], primary: F64, shadow: F64
    ) -> tuple[dict[str, Array], list[str]]:
        """Per-row sums of pairs whose two halves ran in different environments.

        The difference is oriented by fingerprint (first in sorted order minus second), so
        pairs whose primary ran in either environment add up.
        """
        n = len(primary_env)
        codes, names = _codes([*primary_env, *shadow_env], self.max_fingerprints)
        p_code, s_code = codes[:n], codes[n:]
        low, high = np.minimum(p_code, s_code), np.maximum(p_code, s_code)
        diff = np.where(p_code < s_code, primary - shadow, shadow - primary)
        n_fp = int(codes.max()) + 1 if n else 0
        keys = np.where(high < len(names), low * n_fp + high, -1)
        distinct, inverse = np.unique(keys, return_inverse=True)
        cells = distinct[distinct >= 0].tolist()
        labels = [OVERFLOW_ROW, *(cell_label(names[k // n_fp], names[k % n_fp]) for k in cells)]
        shift = 0 if len(distinct) and distinct[0] < 0 else 1
        rows = inverse.astype(np.int64).ravel() + shift
        n_rows = len(labels)
        magnitude = np.abs(diff)
        beyond = np.bincount(rows, weights=magnitude > self.tolerance, minlength=n_rows)
        out: dict[str, Array] = {
            "events": np.bincount(rows, minlength=n_rows).astype(np.int64, copy=False),
            "diff": moments_by_group(diff, rows, n_rows),
            "abs_diff": moments_by_group(magnitude, rows, n_rows),
            "beyond": beyond.astype(np.int64),
        }
        return out, labels
