"""Stage 2: merge partial summaries, close event-time windows, run the guards.

Partials arrive keyed by deployment. Each carries the source partition and the offset range
``(offset_lo, offset_hi]`` it covers; a partial whose range was already applied (a redelivery
after a crash or rebalance) is dropped, so at-least-once delivery counts once.

A window ``[k*w, (k+1)*w)`` closes when every source partition's watermark has passed
``(k+1)*w + allowed_lateness``. Watermarks are tracked per *channel* (partials partition):
heartbeats are sent to every channel after the data, and only within one channel is that order
kept, so a deployment's windows close on the watermarks seen on its own channel. Stage 1
counts an event as late by its own partition's watermark, so a window's content depends only
on each partition's order of events, never on how fast the
partitions are consumed: one worker, three workers and ``streamguard replay`` see the same
windows. A partition that has nothing left to read and no new data for ``idle_timeout_s``
(wall clock, worker only) stops holding windows open; its later events for closed windows are
counted as late. A partition with a backlog is slow, not idle, and keeps holding them.

When a window closes, each guard judges the horizon (the last ``horizon_windows`` windows).
"""

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.core.environments import ENV_PAIR_STREAM, ENV_STREAMS, EnvMeasures, admitted
from streamguard.core.feature_schemas import SCHEMA_FIELDS, SCHEMA_STREAM
from streamguard.core.items import ITEMS_PREFIX, ItemWindow
from streamguard.core.measures import ArmMeasures, PairMeasures
from streamguard.core.partials import from_cells
from streamguard.core.replicas import ALL_ROW, OVERFLOW_ROW, REPLICA_STREAM, ReplicaMeasures
from streamguard.core.slices import ROOT
from streamguard.core.stage1 import PAIR_STREAM
from streamguard.core.summary import (
    Array,
    Field,
    FrozenTable,
    Registry,
    Table,
    sum_rows,
    zeros,
)
from streamguard.core.verdict import Guard, Verdict
from streamguard.policy import DeploymentPolicy, Policy

__all__ = ["PartialError", "Stage2", "Stage2Report"]

_ARM_STREAMS = {"arm:primary", "arm:shadow", "arm:canary"}


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
class _Source:
    watermark: float = -math.inf
    offset: int = -1
    progressed_at: float | None = None
    caught_up: bool = True  # False while its stage-1 owner still has unread messages


@dataclass(slots=True)
class _Stream:
    fields: tuple[Field, ...]
    registry: Registry = field(default_factory=Registry)
    open: dict[int, Table] = field(default_factory=dict)
    closed: deque[tuple[int, FrozenTable]] = field(default_factory=deque)
    baseline_version: str = ""


@dataclass(slots=True)
class _Items:
    """Item exposures of one arm (``items:<role>``), version and slice, per window."""

    open: dict[int, ItemWindow] = field(default_factory=dict)
    closed: deque[tuple[int, ItemWindow]] = field(default_factory=deque)


def _tracked_slices(d: "_Deployment") -> int:
    """Distinct slices (not the whole deployment) with item exposures in ``d``."""
    return len({label for _, _, label in d.items if label != ROOT})


@dataclass(slots=True)
class _Deployment:
    name: str
    policy: DeploymentPolicy
    pair_fields: tuple[Field, ...]
    arm_fields: tuple[Field, ...]
    replica_fields: tuple[Field, ...]
    streams: dict[tuple[str, str], _Stream] = field(default_factory=dict)
    # (items:<role>, version, slice) -> windows; slice "*" is the whole deployment
    items: dict[tuple[str, str, str], _Items] = field(default_factory=dict)
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
        if stream in _ARM_STREAMS:
            return self.arm_fields
        if stream == SCHEMA_STREAM:
            return SCHEMA_FIELDS
        if stream in ENV_STREAMS:
            return EnvMeasures.fields_of(stream)
        raise PartialError(f"unknown stream {stream!r}")


class _Context:
    """The view of one deployment a guard gets when window ``window`` closes."""

    def __init__(self, deployment: _Deployment, window: int) -> None:
        self._d = deployment
        self.deployment = deployment.name
        self.window = window
        self.window_s = deployment.policy.window_s
        self.horizon_windows = deployment.policy.horizon_windows
        self._cache: dict[tuple[str, str, int], tuple[list[str], dict[str, Array]]] = {}

    def _first(self) -> int:
        return self.window - self.horizon_windows + 1

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
        rows = len(s.registry)
        total = zeros(s.fields, rows)
        first = self.window - windows + 1
        for index, table in s.closed:
            if index >= first:
                table.add_into(total)
        self._cache[key] = (s.registry.labels, total)
        return self._cache[key]

    def closed_window(self, stream: str, version: str) -> tuple[list[str], dict[str, Array]] | None:
        s = self._d.streams.get((stream, version))
        if s is None or not s.closed or s.closed[-1][0] != self.window:
            return None
        return s.registry.labels, s.closed[-1][1].view(len(s.registry))

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


class Stage2:
    """Window state and guards for the deployments of the partial partitions a worker owns.

    Parameters
    ----------
    policy
        The policy shared by all workers.
    n_sources
        Number of partitions of the predictions topic: windows wait for all of them.
    guards
        Guards run at every window close.
    idle_timeout_s
        Wall-clock seconds after which a source without new data stops holding windows open
        (only applies when ``now`` is passed to :meth:`advance`).
    """

    def __init__(
        self,
        policy: Policy,
        n_sources: int,
        guards: list[Guard],
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.policy = policy
        self.guards = guards
        self.idle_timeout_s = idle_timeout_s
        self.n_sources = n_sources
        self._channels: dict[int, list[_Source]] = {}
        self._deployments: dict[str, _Deployment] = {}
        self._started_at: float | None = None

    # -- input ---------------------------------------------------------------------------------

    def _sources(self, channel: int) -> list[_Source]:
        sources = self._channels.get(channel)
        if sources is None:
            sources = self._channels[channel] = [_Source() for _ in range(self.n_sources)]
        return sources

    def apply(
        self, message: dict[str, Any], now: float | None = None, channel: int = 0
    ) -> Stage2Report:
        """Apply a partial or heartbeat (already parsed from JSON) read on ``channel``."""
        report = Stage2Report()
        kind = message.get("kind")
        if kind == "heartbeat":
            for entry in message["sources"]:
                partition, offset = int(entry["partition"]), int(entry["offset"])
                self._progress(channel, partition, entry["watermark"], offset, now)
                self._sources(channel)[partition].caught_up = bool(entry.get("caught_up", True))
            return report
        if kind != "partial":
            raise PartialError(f"unexpected message kind {kind!r} on the partials topic")
        source = message["source"]
        partition, hi = int(source["partition"]), int(source["offset_hi"])
        stamp = (hi, int(source.get("part", 0)))
        deployment = self._deployment(str(message["deployment"]))
        deployment.channel = channel
        # Parts of one source and deployment arrive in order on one partition, so anything at
        # or below the last applied stamp is a redelivery.
        if stamp <= deployment.applied.get(partition, (-1, -1)):
            report.duplicates = 1
            return report
        self._merge(deployment, message["groups"], report)
        report.late_at_source = int(message.get("late", 0))
        deployment.applied[partition] = stamp
        # Only the last part of a flush may move the watermark: windows must not close while
        # the flush's other parts, which may hold data for them, are still on their way.
        if stamp[1] == int(source.get("parts", 1)) - 1:
            self._progress(channel, partition, message.get("watermark"), hi, now)
        report.applied = 1
        return report

    def _progress(
        self, channel: int, partition: int, watermark: float | None, offset: int, now: float | None
    ) -> None:
        if not 0 <= partition < self.n_sources:
            raise PartialError(f"source partition {partition} outside 0..{self.n_sources - 1}")
        source = self._sources(channel)[partition]
        if watermark is not None:
            source.watermark = max(source.watermark, float(watermark))
        if offset > source.offset:
            source.offset = offset
            source.progressed_at = now

    def _deployment(self, name: str) -> _Deployment:
        state = self._deployments.get(name)
        if state is None:
            policy = self.policy.for_deployment(name)
            pair_fields = PairMeasures.from_policy(policy.shadow).fields
            arm_fields = ArmMeasures.from_policy(policy.canary).fields
            replica_fields = ReplicaMeasures.from_policy(policy.cold_start).fields
            state = self._deployments[name] = _Deployment(
                name, policy, pair_fields, arm_fields, replica_fields
            )
        return state

    def _merge(self, d: _Deployment, groups: list[dict[str, Any]], report: Stage2Report) -> None:
        for group in groups:
            stream, version, window = (
                str(group["stream"]),
                str(group["version"]),
                int(group["window"]),
            )
            if stream.startswith(ITEMS_PREFIX):
                self._merge_items(d, group)
                continue
            fields = d.fields_of(stream)
            labels = [str(label) for label in group["slices"]]
            arrays = _arrays(fields, group["fields"], len(labels))
            if d.last_closed is not None and window <= d.last_closed:
                if stream == PAIR_STREAM:
                    report.late_at_merge += int(arrays["pairs"][0]) if labels else 0
                continue
            s = d.streams.get((stream, version))
            if s is None:
                s = d.streams[(stream, version)] = _Stream(fields)
            if group.get("baseline_version"):
                s.baseline_version = str(group["baseline_version"])
            # Windows before this one leave the horizon by the time the next window closes.
            oldest = -(2**62)
            if d.last_closed is not None:
                oldest = d.last_closed - d.policy.horizon_windows + 2
            if stream == REPLICA_STREAM:
                rows, arrays = _replica_rows(
                    s, labels, arrays, d.policy.cold_start.max_replicas, oldest
                )
            elif stream in ENV_STREAMS:
                rows, arrays = _env_rows(
                    s, labels, arrays, d.policy, oldest, paired=stream == ENV_PAIR_STREAM
                )
            else:
                rows = s.registry.rows_for(labels, limit=d.policy.slices.max_slices)
            keep = rows >= 0
            if not keep.all():
                report.capped_slices += int((~keep).sum())
                arrays = {k: v[keep] for k, v in arrays.items()}
                rows = rows[keep]
            table = s.open.get(window)
            if table is None:
                table = s.open[window] = Table(fields, capacity=max(16, len(s.registry)))
            table.add(rows, arrays)

    @staticmethod
    def _merge_items(d: _Deployment, group: dict[str, Any]) -> None:
        stream, version, window = str(group["stream"]), str(group["version"]), int(group["window"])
        if stream.removeprefix(ITEMS_PREFIX) not in {s.split(":", 1)[1] for s in _ARM_STREAMS}:
            raise PartialError(f"unknown stream {stream!r}")
        record = group.get("items")
        if not isinstance(record, dict):
            raise PartialError(f"group of stream {stream!r} lacks its items")
        labels = group.get("slices") or [ROOT]
        if not (isinstance(labels, list) and len(labels) == 1 and isinstance(labels[0], str)):
            raise PartialError(f"items group of stream {stream!r} names more than one slice")
        label = labels[0]
        if d.last_closed is not None and window <= d.last_closed:
            return
        settings = d.policy.popularity
        key = (stream, version, label)
        items = d.items.get(key)
        if items is None:
            if label != ROOT and _tracked_slices(d) >= settings.max_slices:
                d.untracked_slices += 1
                return
            items = d.items[key] = _Items()
        target = items.open.get(window)
        if target is None:
            capacity = settings.sketch_capacity if label == ROOT else settings.slice_sketch_capacity
            target = items.open[window] = ItemWindow(capacity, settings.hll_precision)
        try:
            target.add(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise PartialError(f"bad items in stream {stream!r}: {exc}") from None

    # -- windows -------------------------------------------------------------------------------

    def low_watermark(self, now: float | None = None, channel: int = 0) -> float:
        """The event time up to which every (non-idle) source partition has been read."""
        if now is not None and self._started_at is None:
            self._started_at = now
        sources = self._sources(channel)
        active = []
        for source in sources:
            if now is not None and self._started_at is not None and source.caught_up:
                since = (
                    source.progressed_at if source.progressed_at is not None else self._started_at
                )
                if now - since > self.idle_timeout_s:
                    continue  # idle: no new data and nothing left to read
            active.append(source.watermark)
        if not active:
            return max(s.watermark for s in sources)
        return min(active)

    def advance(self, now: float | None = None, final: bool = False) -> list[Verdict]:
        """Close every window that can close and return the guards' verdicts, in order."""
        verdicts: list[Verdict] = []
        lows: dict[int, float] = {}
        for name in sorted(self._deployments):
            d = self._deployments[name]
            if final:
                low = math.inf
            elif d.channel in lows:
                low = lows[d.channel]
            else:
                low = lows[d.channel] = self.low_watermark(now, d.channel)
            verdicts.extend(self._close(d, low, final))
        return verdicts

    def _close(self, d: _Deployment, low: float, final: bool) -> list[Verdict]:
        policy = d.policy
        horizon = policy.horizon_windows
        opened = [i for s in d.streams.values() for i in s.open]
        if final:
            if not opened:
                return []
            target = max(opened)
        else:
            if low == -math.inf:
                return []
            target = math.floor((low - policy.allowed_lateness_s) / policy.window_s) - 1
        after = d.last_closed if d.last_closed is not None else -(2**62)
        if target <= after:
            return []
        # Close windows with data and the windows after them while their data is in the horizon;
        # long stretches without data are skipped instead of iterated.
        candidates: set[int] = set()
        for s in d.streams.values():
            starts = [i for i in s.open if i <= target]
            if s.closed:
                starts.append(s.closed[-1][0])
            for start in starts:
                candidates.update(
                    range(max(start, after + 1), min(start + horizon - 1, target) + 1)
                )
        verdicts = []
        for window in sorted(candidates):
            for s in d.streams.values():
                table = s.open.pop(window, None)
                if table is not None:
                    s.closed.append((window, table.freeze(len(s.registry))))
                while s.closed and s.closed[0][0] <= window - horizon:
                    s.closed.popleft()
            # The popularity guard reads trend_windows + 1 windows of items: keep no more.
            kept = min(horizon, d.policy.popularity.trend_windows + 1)
            for items in d.items.values():
                item_window = items.open.pop(window, None)
                if item_window is not None:
                    items.closed.append((window, item_window))
                while items.closed and items.closed[0][0] <= window - kept:
                    items.closed.popleft()
            d.last_closed = window
            context = _Context(d, window)
            for guard in self.guards:
                judged = guard.evaluate(context)
                if isinstance(judged, list):
                    verdicts.extend(judged)
                elif judged is not None:
                    verdicts.append(judged)
        d.last_closed = target
        for key in [k for k, s in d.streams.items() if not s.open and not s.closed]:
            del d.streams[key]
        for gone in [k for k, i in d.items.items() if not i.open and not i.closed]:
            del d.items[gone]
        return verdicts

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self, channel: int) -> dict[str, Any]:
        """Everything stage 2 knows on ``channel``: source progress, windows, guard state.

        Closed windows come already encoded (:class:`streamguard.core.snapshot.Part`, once per
        window): write it with :func:`~streamguard.core.snapshot.pack` (or ``split``, to store
        each closed window once), whose :func:`~streamguard.core.snapshot.unpack` is what
        :meth:`restore` takes.
        """
        sources = self._channels.get(channel, [])
        return {
            "channel": channel,
            "sources": [[s.watermark, s.offset] for s in sources],
            "deployments": [
                self._snapshot_deployment(d)
                for _, d in sorted(self._deployments.items())
                if d.channel == channel
            ],
        }

    def _snapshot_deployment(self, d: _Deployment) -> dict[str, Any]:
        guards = {g.name: g for g in self.guards}
        streams = []
        for (stream, version), s in sorted(d.streams.items()):
            rows = len(s.registry)
            streams.append(
                {
                    "stream": stream,
                    "version": version,
                    "baseline_version": s.baseline_version,
                    "labels": list(s.registry.labels),
                    "open": [[i, t.view(rows)] for i, t in sorted(s.open.items())],
                    "closed": [[i, t.encoded()] for i, t in s.closed],
                }
            )
        return {
            "name": d.name,
            "applied": [[p, hi, part] for p, (hi, part) in sorted(d.applied.items())],
            "last_closed": d.last_closed,
            "streams": streams,
            "untracked_slices": d.untracked_slices,
            "items": [
                {
                    "stream": stream,
                    "version": version,
                    "slice": label,
                    "open": [[i, w.to_dict()] for i, w in sorted(s.open.items())],
                    "closed": [[i, w.part()] for i, w in s.closed],
                }
                for (stream, version, label), s in sorted(d.items.items())
            ],
            "guards": {
                name: guards[name].snapshot_state(state)
                for name, state in sorted(d.guard_state.items())
                if name in guards
            },
        }

    def restore(self, channel: int, snapshot: dict[str, Any]) -> None:
        """Replace what stage 2 knows on ``channel`` with a :meth:`snapshot`."""
        for name in [n for n, d in self._deployments.items() if d.channel == channel]:
            del self._deployments[name]
        self._channels[channel] = [
            _Source(watermark=float(w), offset=int(o)) for w, o in snapshot["sources"]
        ] or [_Source() for _ in range(self.n_sources)]
        guards = {g.name: g for g in self.guards}
        for saved in snapshot["deployments"]:
            d = self._deployment(str(saved["name"]))
            d.channel = channel
            d.applied = {int(p): (int(hi), int(part)) for p, hi, part in saved["applied"]}
            d.last_closed = None if saved["last_closed"] is None else int(saved["last_closed"])
            d.streams = {}
            for st in saved["streams"]:
                fields = d.fields_of(str(st["stream"]))
                stream = _Stream(fields, baseline_version=str(st["baseline_version"]))
                stream.registry.rows_for(list(st["labels"]))
                stream.open = {int(i): _table(fields, arrays) for i, arrays in st["open"]}
                stream.closed = deque(
                    (int(i), _frozen(fields, saved_table, len(stream.registry)))
                    for i, saved_table in st["closed"]
                )
                d.streams[(str(st["stream"]), str(st["version"]))] = stream
            d.untracked_slices = int(saved.get("untracked_slices", 0))
            d.items = {
                (str(it["stream"]), str(it["version"]), str(it.get("slice", ROOT))): _Items(
                    {int(i): ItemWindow.from_dict(w) for i, w in it["open"]},
                    deque((int(i), ItemWindow.from_dict(w)) for i, w in it["closed"]),
                )
                for it in saved.get("items", [])
            }
            d.guard_state = {
                name: guards[name].restore_state(data)
                for name, data in saved["guards"].items()
                if name in guards
            }

    def drop(self, channel: int) -> None:
        """Forget everything of ``channel`` (revoked from this worker)."""
        for name in [n for n, d in self._deployments.items() if d.channel == channel]:
            del self._deployments[name]
        self._channels.pop(channel, None)

    # -- introspection -------------------------------------------------------------------------

    def deployments(self) -> list[str]:
        """Deployments with state."""
        return sorted(self._deployments)

    def last_closed_end(self, deployment: str) -> float | None:
        """Event time at which the deployment's last closed window ended."""
        d = self._deployments.get(deployment)
        if d is None or d.last_closed is None:
            return None
        return float((d.last_closed + 1) * d.policy.window_s)

    def source_watermarks(self) -> list[float]:
        """Highest watermark of every source partition over all channels (``-inf`` before data)."""
        out = [-math.inf] * self.n_sources
        for sources in self._channels.values():
            for i, source in enumerate(sources):
                out[i] = max(out[i], source.watermark)
        return out


def _replica_rows(
    s: _Stream, labels: list[str], arrays: dict[str, Array], max_replicas: int, oldest: int
) -> tuple[npt.NDArray[np.int64], dict[str, Array]]:
    """Rows of a replica group's labels, within ``max_replicas`` replica rows.

    Replicas come and go, so when the registry is full the rows of replicas without requests
    in any window still held are released first (:func:`_compact`); replicas that still find
    no row are folded into ``~overflow``, whose requests count how much was not attributed.
    Closed windows before ``oldest`` can no longer enter a horizon and are dropped then.
    """
    limit = max_replicas + 2
    s.registry.rows_for([ALL_ROW, OVERFLOW_ROW])
    rows = s.registry.rows_for(labels, limit=limit)
    if (rows < 0).any() and len(s.registry) >= limit:
        _compact(s, oldest)
        rows = s.registry.rows_for(labels, limit=limit)
    return _fold_overflow(s, rows, arrays)


def _env_rows(
    s: _Stream,
    labels: list[str],
    arrays: dict[str, Array],
    policy: DeploymentPolicy,
    oldest: int,
    *,
    paired: bool,
) -> tuple[npt.NDArray[np.int64], dict[str, Array]]:
    """Rows of an ``env``/``env_pair`` group's labels, within ``max_fingerprints``.

    Labels naming a fingerprint beyond the cap (or beyond the slice cap) are folded into
    ``~overflow``; rows of fingerprints gone from every held window are released first.
    """
    limit = policy.determinism.max_fingerprints
    s.registry.rows_for([OVERFLOW_ROW])
    fresh = [label for label in labels if label not in s.registry.index]
    if fresh and not all(admitted(s.registry.labels, fresh, limit, paired)):
        _compact(s, oldest)
    if fresh:
        allowed = dict(zip(fresh, admitted(s.registry.labels, fresh, limit, paired), strict=True))
        labels = [label if allowed.get(label, True) else OVERFLOW_ROW for label in labels]
    rows = s.registry.rows_for(labels, limit=policy.slices.max_slices)
    return _fold_overflow(s, rows, arrays)


def _fold_overflow(
    s: _Stream, rows: npt.NDArray[np.int64], arrays: dict[str, Array]
) -> tuple[npt.NDArray[np.int64], dict[str, Array]]:
    """Move the entries without a row (``-1``), and any on ``~overflow``, into one overflow row."""
    overflow_row = s.registry.index[OVERFLOW_ROW]
    if not ((rows < 0) | (rows == overflow_row)).any():
        return rows, arrays
    rows = np.where(rows < 0, overflow_row, rows)
    if (rows == overflow_row).sum() == 1:
        return rows, arrays
    merged = sum_rows(s.fields, arrays, np.flatnonzero(rows == overflow_row).tolist())
    keep = rows != overflow_row
    rows = np.append(rows[keep], overflow_row)
    arrays = {k: np.concatenate([v[keep], merged[k]]) for k, v in arrays.items()}
    return rows, arrays


def _compact(s: _Stream, oldest: int) -> None:
    """Release the rows (replicas, fingerprints) without events in any window still judgeable."""
    while s.closed and s.closed[0][0] < oldest:
        s.closed.popleft()
    n = len(s.registry)
    tables: list[Table | FrozenTable] = [*s.open.values(), *(t for _, t in s.closed)]
    live = np.zeros(n, dtype=bool)
    for table in tables:
        live |= table.view(n)["events"] > 0
    pinned = [
        s.registry.index[label] for label in (ALL_ROW, OVERFLOW_ROW) if label in s.registry.index
    ]
    live[pinned] = True
    if live.all():
        return
    keep = np.flatnonzero(live)
    registry = Registry()
    registry.rows_for([s.registry.labels[i] for i in keep.tolist()])

    def shrink(table: Table | FrozenTable) -> Table:
        arrays = table.view(n)
        return _table(s.fields, {k: v[keep] for k, v in arrays.items()})

    s.open = {i: shrink(t) for i, t in s.open.items()}
    s.closed = deque((i, shrink(t).freeze(len(keep))) for i, t in s.closed)
    s.registry = registry


def _frozen(fields: tuple[Field, ...], saved: dict[str, Any], rows: int) -> FrozenTable:
    """A closed window from a snapshot: compact, or dense arrays (older snapshots)."""
    if "cells" in saved and "rows" in saved:
        return FrozenTable.from_dict(fields, saved)
    return _table(fields, saved).freeze(rows)


def _table(fields: tuple[Field, ...], arrays: dict[str, Array]) -> Table:
    """A table holding exactly ``arrays`` (merging into zeros copies moments exactly)."""
    rows = len(next(iter(arrays.values()))) if arrays else 0
    table = Table(fields, capacity=max(16, rows))
    table.add(np.arange(rows, dtype=np.int64), arrays)
    return table


def _arrays(fields: tuple[Field, ...], raw: dict[str, Any], rows: int) -> dict[str, Array]:
    out: dict[str, Array] = {}
    for f in fields:
        if f.name not in raw:
            raise PartialError(f"partial lacks field {f.name!r}")
        value = raw[f.name]
        sparse = type(value) is dict and f.kind == "count" and f.width
        try:
            if sparse:
                array = from_cells(value, f.shape(rows))  # checks its counts itself
            else:
                array = np.asarray(value, dtype=f.dtype())
        except (TypeError, ValueError, OverflowError) as exc:
            raise PartialError(f"field {f.name!r}: {exc}") from None
        if rows == 0:
            array = np.zeros(f.shape(0), f.dtype())
        if array.shape != f.shape(rows):
            expected = f.shape(rows)
            raise PartialError(
                f"field {f.name!r} has shape {array.shape}, this worker's policy expects {expected}"
            )
        if f.kind == "count" and rows and not sparse and array.min() < 0:
            raise PartialError(f"field {f.name!r} has negative counts")
        out[f.name] = array
    return out
