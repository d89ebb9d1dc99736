"""Feature backfill leakage: block a training pipeline whose features were computed after the label.

A training pipeline that backfills features with a look-ahead window (engagement fetched
through Jan 20 to predict Jan 15 events) trains on the future: 0.92 AUC offline, 0.80 in
production. The fix reported for that incident is to block training as soon as any feature
timestamp exceeds its example's label timestamp by more than a tolerance (one hour).

Each training example says when its label was observed (``label_ts``) and up to when each
feature was computed (``feature_ts``). Per pipeline and feature the guard counts *violations*,
examples whose ``feature_ts - label_ts > tolerance_s``, exactly: the training examples topic is
keyed by pipeline, so one partition holds a pipeline's whole stream, and this class keeps one
state per partition that the worker snapshots with the offset it covers (like stage 1), so a
redelivered message is never counted twice (:meth:`LeakageGuard.process` skips offsets at or
below the last one applied).

On the first violation of a pipeline it issues one ``block`` command (and its alert): the
command's ``deployment`` is the pipeline, its ``model_version`` is ``*``, its ``ts`` the label
time of the first violating example, so the command id is the same however often the decision
is re-made (after a crash, in replay). The evidence lists the offending features with their
violation counts and worst offsets, the worst offset in seconds, and the first violating
example ids, all as of the message that triggered the block. Counting goes on afterwards
(:meth:`LeakageGuard.status`).

The work per message is a handful of numpy operations over the flattened features of the
whole batch; Python loops run over distinct pipelines and distinct offending features only.

Examples
--------
>>> import numpy as np
>>> from streamguard.contracts import TrainingBatch
>>> from streamguard.policy import LeakagePolicy, Policy
>>> guard = LeakageGuard(Policy())
>>> batch = TrainingBatch(["e1", "e2"], ["p", "p"], ["x1", "x2"], np.array([0.0, 0.0]),
...     np.array([0, 0, 1]), ["clicks", "views", "clicks"], np.array([10.0, 7200.0, 0.0]))
>>> report = guard.process(0, 0, batch)
>>> (report.examples, report.violations, [c.action for c, _ in report.commands])
(2, 1, ['block'])
>>> report.commands[0][0].evidence["features"]
{'views': {'violations': 1, 'worst_offset_s': 7200.0}}
>>> guard.process(0, 0, batch).examples  # the same offset again: already counted
0
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.contracts import Alert, Command, TrainingBatch, alert_for
from streamguard.policy import LeakagePolicy, Policy

__all__ = ["NAME", "LeakageGuard", "LeakageReport", "PipelineCounts"]

NAME = "leakage"
#: ``model_version`` of a block: it applies to whatever the pipeline would train.
ALL_VERSIONS = "*"


@dataclass(slots=True)
class PipelineCounts:
    """Exact counts of one pipeline since its partition's state began."""

    examples: int = 0
    violating_examples: int = 0
    #: feature -> [violations, worst offset in seconds]
    features: dict[str, list[float]] = field(default_factory=dict)
    worst_offset_s: float = -math.inf
    worst_feature: str = ""
    example_ids: list[str] = field(default_factory=list)  # first violating ones, bounded
    blocked_command: str = ""  # id of the block command, once issued

    @property
    def violations(self) -> int:
        """Feature violations over all features (an example may violate several)."""
        return int(sum(count for count, _ in self.features.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (snapshots, status)."""
        return {
            "examples": self.examples,
            "violating_examples": self.violating_examples,
            "features": {k: [int(c), w] for k, (c, w) in sorted(self.features.items())},
            "worst_offset_s": None if self.worst_offset_s == -math.inf else self.worst_offset_s,
            "worst_feature": self.worst_feature,
            "example_ids": list(self.example_ids),
            "blocked_command": self.blocked_command,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "PipelineCounts":
        """Inverse of :meth:`to_dict`."""
        worst = raw["worst_offset_s"]
        return cls(
            examples=int(raw["examples"]),
            violating_examples=int(raw["violating_examples"]),
            features={k: [int(c), float(w)] for k, (c, w) in raw["features"].items()},
            worst_offset_s=-math.inf if worst is None else float(worst),
            worst_feature=str(raw["worst_feature"]),
            example_ids=[str(x) for x in raw["example_ids"]],
            blocked_command=str(raw["blocked_command"]),
        )


@dataclass(slots=True)
class LeakageReport:
    """What one message did (for metrics) and the commands it calls for."""

    examples: int = 0
    violations: int = 0
    violating_examples: int = 0
    skipped_offsets: int = 0
    commands: list[tuple[Command, Alert]] = field(default_factory=list)


@dataclass(slots=True)
class _Partition:
    offset: int = -1  # last offset applied
    pipelines: dict[str, PipelineCounts] = field(default_factory=dict)


def _factorize(values: list[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
    names = sorted(set(values))
    if len(names) == 1:
        return np.zeros(len(values), dtype=np.int64), names
    codes = {name: i for i, name in enumerate(names)}
    return np.fromiter(map(codes.__getitem__, values), np.int64, len(values)), names


class LeakageGuard:
    """Per training-examples partition: exact violation counts and one block per pipeline."""

    name = NAME

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._partitions: dict[int, _Partition] = {}

    # -- processing ----------------------------------------------------------------------------

    def process(self, partition: int, offset: int, batch: TrainingBatch) -> LeakageReport:
        """Count the examples of the message at ``offset`` of ``partition``; commands to issue."""
        report = LeakageReport()
        state = self._partitions.setdefault(partition, _Partition())
        if offset <= state.offset:
            report.skipped_offsets = 1
            return report
        state.offset = offset
        n = len(batch)
        if n == 0:
            return report
        codes, names = _factorize(batch.pipeline)
        report.examples = n
        counts = [state.pipelines.setdefault(name, PipelineCounts()) for name in names]
        for counted, added in zip(
            counts, np.bincount(codes, minlength=len(names)).tolist(), strict=True
        ):
            counted.examples += added
        settings = [self.policy.for_deployment(name).leakage for name in names]
        tolerance = np.array([s.tolerance_s if s.enabled else math.inf for s in settings])
        rows = batch.feature_row
        offsets = batch.feature_ts - batch.label_ts[rows]
        violating = offsets > tolerance[codes[rows]]
        if not violating.any():
            return report
        v_rows = rows[violating]
        v_offsets = offsets[violating]
        v_pipelines = codes[v_rows]
        features, feature_codes = np.unique(
            np.asarray(batch.feature_name)[violating], return_inverse=True
        )
        keys, key_index, key_counts = np.unique(
            v_pipelines * len(features) + feature_codes, return_inverse=True, return_counts=True
        )
        worst = np.full(len(keys), -np.inf)
        np.maximum.at(worst, key_index, v_offsets)
        for key, count, worst_s in zip(
            keys.tolist(), key_counts.tolist(), worst.tolist(), strict=True
        ):
            counted = counts[key // len(features)]
            feature = str(features[key % len(features)])
            entry = counted.features.setdefault(feature, [0, -math.inf])
            entry[0] += count
            entry[1] = max(entry[1], worst_s)
            if worst_s > counted.worst_offset_s:
                counted.worst_offset_s, counted.worst_feature = worst_s, feature
        flagged = np.zeros(n, dtype=bool)
        flagged[v_rows] = True
        per_pipeline = np.bincount(codes[flagged], minlength=len(names))
        report.violations = int(violating.sum())
        report.violating_examples = int(flagged.sum())
        for code in np.flatnonzero(per_pipeline).tolist():
            counted, limit = counts[code], settings[code].max_example_ids
            counted.violating_examples += int(per_pipeline[code])
            mine = np.flatnonzero(flagged & (codes == code))
            room = limit - len(counted.example_ids)
            if room > 0:
                counted.example_ids.extend(batch.example_id[i] for i in mine[:room].tolist())
            if not counted.blocked_command:
                first = int(mine[0])
                command = self._block(
                    names[code], counted, settings[code], partition, offset, batch, first
                )
                counted.blocked_command = command[0].command_id
                report.commands.append(command)
        return report

    def _block(  # noqa: PLR0917 - private helper, called once
        self,
        pipeline: str,
        counted: PipelineCounts,
        settings: LeakagePolicy,
        partition: int,
        offset: int,
        batch: TrainingBatch,
        first: int,
    ) -> tuple[Command, Alert]:
        listed = sorted(counted.features.items(), key=lambda kv: (-kv[1][0], kv[0]))
        features = {
            name: {"violations": int(count), "worst_offset_s": round(worst, 6)}
            for name, (count, worst) in listed[: settings.max_features_listed]
        }
        label_ts = float(batch.label_ts[first])
        evidence = {
            "pipeline": pipeline,
            "guard": NAME,
            "statistic": "feature_ts - label_ts",
            "value": round(counted.worst_offset_s, 6),
            "threshold": settings.tolerance_s,
            "tolerance_s": settings.tolerance_s,
            "worst_offset_s": round(counted.worst_offset_s, 6),
            "worst_feature": counted.worst_feature,
            "violations": counted.violations,
            "violating_examples": counted.violating_examples,
            "examples": counted.examples,
            "features": features,
            "features_total": len(counted.features),
            "example_ids": list(counted.example_ids),
            "first_violation": {"example_id": batch.example_id[first], "label_ts": label_ts},
            "counted_through": {"partition": partition, "offset": offset},
        }
        command = Command(
            action="block",
            deployment=pipeline,
            model_version=ALL_VERSIONS,
            guard=NAME,
            slice=None,
            evidence=evidence,
            ts=label_ts,
        )
        summary = (
            f"training pipeline {pipeline}: {counted.violating_examples} of {counted.examples} "
            f"examples have features computed after their label (worst "
            f"{counted.worst_feature} {counted.worst_offset_s:.0f} s > tolerance "
            f"{settings.tolerance_s:.0f} s); block issued"
        )
        return command, alert_for(command, summary)

    # -- state ---------------------------------------------------------------------------------

    def status(self, pipeline: str) -> PipelineCounts | None:
        """The counts of a pipeline this worker holds (None if unseen)."""
        for state in self._partitions.values():
            if pipeline in state.pipelines:
                return state.pipelines[pipeline]
        return None

    def partitions(self) -> list[int]:
        """Partitions with state."""
        return sorted(self._partitions)

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked from this worker)."""
        self._partitions.pop(partition, None)

    def snapshot(self, partition: int) -> dict[str, Any]:
        """State of ``partition`` with the last offset it includes."""
        state = self._partitions.get(partition, _Partition())
        return {
            "offset": state.offset,
            "pipelines": {k: v.to_dict() for k, v in sorted(state.pipelines.items())},
        }

    def restore(self, partition: int, snapshot: dict[str, Any] | None) -> int:
        """Replace ``partition``'s state with a :meth:`snapshot`; return the offset to resume at."""
        if snapshot is None:
            self._partitions[partition] = _Partition()
            return 0
        self._partitions[partition] = _Partition(
            offset=int(snapshot["offset"]),
            pipelines={
                str(k): PipelineCounts.from_dict(v) for k, v in snapshot["pipelines"].items()
            },
        )
        return int(snapshot["offset"]) + 1
