"""Simulated training pipelines: training examples with (possibly leaking) feature timestamps.

A point-in-time correct pipeline computes every feature from data up to its example's label
time, minus a freshness lag (features lag the label by up to ``max_lag_s``). A leaking one
backfills some features with a look-ahead window (:class:`Backfill`): the incident behind the
leakage guard fetched engagement through Jan 20 to label Jan 15 events, so those features carry
the backfill's end as their timestamp, days after the label.

The generator is deterministic for a seed.

Examples
--------
>>> healthy = TrainingPipeline(seed=1)
>>> examples = healthy.examples(100)
>>> len(examples), all(max(e["feature_ts"].values()) <= e["label_ts"] for e in examples)
(100, True)
>>> leaky = TrainingPipeline(seed=1, backfill=Backfill(("engagement_7d",), until_s=5 * 86400))
>>> late = [e["feature_ts"]["engagement_7d"] - e["label_ts"] for e in leaky.examples(100)]
>>> min(late) > 3600
True
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Backfill", "TrainingPipeline", "WithTraining"]

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Backfill:
    """``features`` computed with data through ``until_s`` seconds after the run's start.

    Labels fall in the run's first ``label_days`` days, so a backfill ending after them looks
    ahead of every label by up to ``until_s`` seconds. ``share`` of the examples are affected
    (the rest were computed point in time).
    """

    features: tuple[str, ...]
    until_s: float
    share: float = 1.0


@dataclass(slots=True)
class TrainingPipeline:
    """Deterministic (seeded) generator of training examples of one pipeline."""

    pipeline: str = "ctr-trainer"
    start_ts: float = 1_789_000_000.0  # the first label's day
    label_days: float = 1.0
    features: tuple[str, ...] = ("engagement_7d", "clicks_1d", "user_age_days", "item_ctr_30d")
    max_lag_s: float = 6 * 3600.0
    backfill: Backfill | None = None
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)
    _next: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng([self.seed, 7])

    def examples(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` examples, labels in order of example id."""
        rng = self._rng
        label = self.start_ts + np.sort(rng.random(count)) * self.label_days * DAY_S
        lags = rng.random((count, len(self.features))) * self.max_lag_s
        feature_ts = label[:, None] - lags
        if self.backfill is not None:
            hit = rng.random(count) < self.backfill.share
            until = self.start_ts + self.backfill.until_s
            for j, name in enumerate(self.features):
                if name in self.backfill.features:
                    feature_ts[:, j] = np.where(hit, np.maximum(until, label), feature_ts[:, j])
        out = []
        for i in range(count):
            example_id = f"{self.pipeline}-ex-{self.seed}-{self._next + i}"
            out.append(
                {
                    "schema_version": 1,
                    "kind": "training_example",
                    "event_id": f"{example_id}-e",
                    "pipeline": self.pipeline,
                    "example_id": example_id,
                    "label_ts": round(float(label[i]), 3),
                    "feature_ts": {
                        name: round(float(feature_ts[i, j]), 3)
                        for j, name in enumerate(self.features)
                    },
                }
            )
        self._next += count
        return out


@dataclass(slots=True)
class WithTraining:
    """Serving traffic plus a training pipeline's examples, ``per_second`` each second.

    Until ``after_s`` seconds into the run the pipeline is point-in-time correct; from then on
    its examples come from a run with ``backfill`` (the incident: a backfill job that looked
    ahead). The examples follow the serving events of their second, so a consumer of both
    sees them in the order a fleet and a trainer would produce them.
    """

    traffic: Any  # a TrafficGenerator; Any keeps this module free of the traffic module
    backfill: Backfill
    after_s: float
    per_second: int = 20
    seed: int = 0
    _clean: TrainingPipeline = field(init=False, repr=False)
    _leaky: TrainingPipeline = field(init=False, repr=False)
    _second: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        self._clean = TrainingPipeline(seed=self.seed)
        # Another seed: a rerun of the job, whose example ids differ from the first run's.
        self._leaky = TrainingPipeline(seed=self.seed + 1_000_003, backfill=self.backfill)

    def seconds(self, count: int) -> Iterator[list[dict[str, Any]]]:
        """Events of the next ``count`` seconds: serving events, then training examples."""
        for events in self.traffic.seconds(count):
            source = self._leaky if self._second >= self.after_s else self._clean
            events.extend(source.examples(self.per_second))
            self._second += 1
            yield events
