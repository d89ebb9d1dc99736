"""The state stage 2 keeps per deployment, and the view of it a guard gets at a window close.

A deployment's summaries are kept per *stream* (pairs, each arm, replicas, schemas,
environments) and model version: a registry of slice rows, the open windows as growing
:class:`~streamguard.core.summary.Table` s, and the closed ones, frozen, for the horizon.
:class:`ItemStreams` holds a version's item exposures per window the same way.
:class:`GuardContext` is what :class:`~streamguard.core.verdict.Guard` s read.
:class:`ChannelSource` is what a channel knows of each source partition (watermark, offset),
:class:`Stage2Report` what applying a message did, :class:`PartialError` a partial that does
not fit the policy.
"""

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from streamguard.core.environments import ENV_STREAMS, EnvMeasures
from streamguard.core.feature_schemas import SCHEMA_FIELDS, SCHEMA_STREAM
from streamguard.core.items import ItemWindow
from streamguard.core.open_table import OpenTable
from streamguard.core.replicas import REPLICA_STREAM
from streamguard.core.slices import ROOT
from streamguard.core.stage1 import PAIR_STREAM
from streamguard.core.summary import (
    Array,
    Field,
    FrozenTable,
    Registry,
    sum_frozen,
    zeros,
)
from streamguard.policy import DeploymentPolicy

__all__ = [
    "ARM_STREAMS",
    "ChannelSource",
    "DeploymentState",
    "GuardContext",
    "ItemStreams",
    "PartialError",
    "Stage2Report",
    "Stream",
    "tracked_slices",
]

ARM_STREAMS = {"arm:primary", "arm:shadow", "arm:canary"}


class PartialError(ValueError):
    """A partial does not fit this worker's policy (workers must share one policy file)."""


@dataclass(slots=True)
class Stage2Report:
    """What applying one message did, for metrics."""

    applied: int = 0
    duplicates: int = 0  # partials whose offset range was already applied
    late_at_merge: int = 0  # measurements for windows already closed
    capped_slices: int = 0
    late_at_source: int = 0


@dataclass(slots=True)
class ChannelSource:
    watermark: float = -math.inf
    offset: int = -1
    progressed_at: float | None = None
    caught_up: bool = True  # False while its stage-1 owner still has unread messages


@dataclass(slots=True)
class Stream:
    fields: tuple[Field, ...]
    registry: Registry = field(default_factory=Registry)
    open: dict[int, OpenTable] = field(default_factory=dict)
    closed: deque[tuple[int, FrozenTable]] = field(default_factory=deque)
    baseline_version: str = ""


@dataclass(slots=True)
class ItemStreams:
    """Item exposures of one arm (``items:<role>``), version and slice, per window."""

    open: dict[int, ItemWindow] = field(default_factory=dict)
    closed: deque[tuple[int, ItemWindow]] = field(default_factory=deque)


def tracked_slices(d: "DeploymentState") -> int:
    """Distinct slices (not the whole deployment) with item exposures in ``d``."""
    return len({label for _, _, label in d.items if label != ROOT})


@dataclass(slots=True)
class DeploymentState:
    name: str
    policy: DeploymentPolicy
    pair_fields: tuple[Field, ...]
    arm_fields: tuple[Field, ...]
    replica_fields: tuple[Field, ...]
    streams: dict[tuple[str, str], Stream] = field(default_factory=dict)
    # (items:<role>, version, slice) -> windows; slice "*" is the whole deployment
    items: dict[tuple[str, str, str], ItemStreams] = field(default_factory=dict)
    untracked_slices: int = 0  # slices refused beyond popularity.max_slices
    # source partition -> (offset_hi, part) of the last partial applied
    applied: dict[int, tuple[int, int]] = field(default_factory=dict)
    last_closed: int | None = None
    channel: int = 0  # the partials partition this deployment's partials arrive on
    guard_state: dict[str, dict[Any, Any]] = field(default_factory=dict)

    def fields_of(self, stream: str) -> tuple[Field, ...]:
        """Summary fields of a stream of this deployment."""
        if stream == PAIR_STREAM:
            return self.pair_fields
        if stream == REPLICA_STREAM:
            return self.replica_fields
        if stream in ARM_STREAMS:
            return self.arm_fields
        if stream == SCHEMA_STREAM:
            return SCHEMA_FIELDS
        if stream in ENV_STREAMS:
            return EnvMeasures.fields_of(stream)
        raise PartialError(f"unknown stream {stream!r}")


class GuardContext:
    """The view of one deployment a guard gets when window ``window`` closes."""

    def __init__(self, deployment: DeploymentState, window: int) -> None:
        self._d = deployment
        self.deployment = deployment.name
        self.window = window
        self.window_s = deployment.policy.window_s
        self.horizon_windows = deployment.policy.horizon_windows
        self._cache: dict[tuple[str, str, int], tuple[list[str], dict[str, Array]]] = {}
        #: Guards that raised at this close (stage 2 adds them): a guard reading another's
        #: state (the canary reads the stratification's) knows it is the last close's.
        self.failed: set[str] = set()

    def _first(self) -> int:
        return self.window - self.horizon_windows + 1

    def forget(self) -> None:
        """Drop the sums handed out so far; the next guard gets them afresh."""
        self._cache.clear()

    def versions(self, stream: str) -> list[str]:
        recent = []
        for (name, version), s in self._d.streams.items():
            if name == stream and s.closed and s.closed[-1][0] >= self._first():
                recent.append((s.closed[-1][0], version))
        return [version for _, version in sorted(recent, reverse=True)]

    def horizon(self, stream: str, version: str) -> tuple[list[str], dict[str, Array]]:
        return self.recent(stream, version, self.horizon_windows)

    def recent(self, stream: str, version: str, windows: int) -> tuple[list[str], dict[str, Array]]:
        windows = max(1, min(windows, self.horizon_windows))
        key = (stream, version, windows)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        s = self._d.streams[(stream, version)]
        first = self.window - windows + 1
        tables = [table for index, table in s.closed if index >= first]
        # The labels are copies everywhere: the registry's own list must not be sortable by a
        # guard (the sums and windows handed out are fresh arrays already).
        self._cache[key] = (list(s.registry.labels), sum_frozen(s.fields, len(s.registry), tables))
        return self._cache[key]

    def windows(
        self, stream: str, version: str, count: int, names: frozenset[str]
    ) -> tuple[list[str], list[dict[str, Array]]]:
        """Fields ``names`` of the last ``count`` windows (at most the horizon), oldest first.

        Each is aligned with the stream's labels; a window without data is all zeros.
        """
        count = max(1, min(count, self.horizon_windows))
        s = self._d.streams[(stream, version)]
        rows = len(s.registry)
        fields = tuple(f for f in s.fields if f.name in names)
        by_index = dict(s.closed)
        out = []
        for index in range(self.window - count + 1, self.window + 1):
            window = zeros(fields, rows)
            table = by_index.get(index)
            if table is not None:
                table.add_into(window, names)
            out.append(window)
        return list(s.registry.labels), out

    def closed_window(self, stream: str, version: str) -> tuple[list[str], dict[str, Array]] | None:
        s = self._d.streams.get((stream, version))
        if s is None or not s.closed or s.closed[-1][0] != self.window:
            return None
        return list(s.registry.labels), s.closed[-1][1].view(len(s.registry))

    def baseline_version(self, stream: str, version: str) -> str:
        return self._d.streams[(stream, version)].baseline_version

    def item_windows(
        self, stream: str, version: str, slice_: str = ROOT
    ) -> list[tuple[int, ItemWindow]]:
        s = self._d.items.get((stream, version, slice_))
        if s is None:
            return []
        return [(i, w) for i, w in s.closed if i >= self._first()]

    def item_slices(self, stream: str, version: str) -> list[str]:
        return sorted(
            label
            for (name, v, label), s in self._d.items.items()
            if name == stream and v == version and label != ROOT and s.closed
        )

    def untracked_slices(self) -> int:
        return self._d.untracked_slices

    def state(self, guard: str) -> dict[Any, Any]:
        return self._d.guard_state.setdefault(guard, {})
