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
A guard that raises gives an error verdict instead and leaves its state as it was; the other
guards judge on (:mod:`streamguard.core.guard_failure`).
"""

import math
import pickle
from collections import Counter, deque
from typing import Any

from streamguard.core.guard_failure import GuardFailure, failure_verdict
from streamguard.core.items import ItemWindow
from streamguard.core.measures import ArmMeasures, PairMeasures
from streamguard.core.replicas import ReplicaMeasures
from streamguard.core.slices import ROOT
from streamguard.core.stage2_merge import check_groups, merge_groups
from streamguard.core.stage2_rows import (
    frozen_table,
    open_table,
)
from streamguard.core.stage2_state import (
    ChannelSource,
    DeploymentState,
    GuardContext,
    ItemStreams,
    PartialError,
    Stage2Report,
    Stream,
)
from streamguard.core.verdict import Guard, Verdict
from streamguard.policy import Policy

__all__ = ["PartialError", "Stage2", "Stage2Report"]


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
        self._channels: dict[int, list[ChannelSource]] = {}
        self._deployments: dict[str, DeploymentState] = {}
        self._started_at: float | None = None
        # Per channel, a count of the changes only a snapshot keeps: applied partials and
        # closes. Heartbeats alone do not count, since replaying them rebuilds what they did.
        self._revisions: Counter[int] = Counter()
        #: Guards that raised at a close, latest last, for the worker and replay to log and
        #: count: they take them after every :meth:`advance` (:meth:`take_failures`).
        self.failures: list[GuardFailure] = []

    # -- input ---------------------------------------------------------------------------------

    def _sources(self, channel: int) -> list[ChannelSource]:
        sources = self._channels.get(channel)
        if sources is None:
            sources = self._channels[channel] = [ChannelSource() for _ in range(self.n_sources)]
        return sources

    def apply(
        self, message: dict[str, Any], now: float | None = None, channel: int = 0
    ) -> Stage2Report:
        """Apply a partial or heartbeat (already parsed from JSON) read on ``channel``."""
        report = Stage2Report()
        if not isinstance(message, dict):
            raise PartialError("a message on the partials topic is not a JSON object")
        version = message.get("schema_version", 1)
        if type(version) is not int or version != 1:  # a newer worker's: could count wrong
            raise PartialError(f"partials of schema_version {version!r:.40}; this worker reads 1")
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
        part, parts = int(source.get("part", 0)), int(source.get("parts", 1))
        watermark = message.get("watermark")
        watermark = None if watermark is None else float(watermark)
        late = int(message.get("late", 0))
        if not 0 <= partition < self.n_sources:
            raise PartialError(f"source partition {partition} outside 0..{self.n_sources - 1}")
        name = str(message["deployment"])
        deployment = self._deployments.get(name)
        if deployment is None:  # registered only once the partial is found good
            deployment = self._new_deployment(name)
        # Parts of one source and deployment arrive in order on one partition, so anything at
        # or below the last applied stamp is a redelivery.
        if (hi, part) <= deployment.applied.get(partition, (-1, -1)):
            self._deployments[name] = deployment
            deployment.channel = channel
            report.duplicates = 1
            return report
        # Everything is read and checked before anything changes: a partial that raises
        # leaves no trace, and its redelivery is merged whole.
        groups = check_groups(deployment, message["groups"])
        self._deployments[name] = deployment
        deployment.channel = channel
        merge_groups(deployment, groups, report)
        report.late_at_source = late
        deployment.applied[partition] = (hi, part)
        # Only the last part of a flush may move the watermark: windows must not close while
        # the flush's other parts, which may hold data for them, are still on their way.
        if part == parts - 1:
            self._progress(channel, partition, watermark, hi, now)
        report.applied = 1
        self._revisions[channel] += 1
        return report

    def revision(self, channel: int) -> int:
        """How many times the state of ``channel`` changed otherwise than by heartbeats.

        Equal before and after some messages means they were heartbeats that closed nothing:
        a snapshot taken before them, replayed from its offset, rebuilds the same state, so the
        worker may save less often while only heartbeats arrive.
        """
        return self._revisions[channel]

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

    def _deployment(self, name: str) -> DeploymentState:
        state = self._deployments.get(name)
        if state is None:
            state = self._deployments[name] = self._new_deployment(name)
        return state

    def _new_deployment(self, name: str) -> DeploymentState:
        policy = self.policy.for_deployment(name)
        pair_fields = PairMeasures.from_policy(policy.shadow).fields
        arm_fields = ArmMeasures.from_policy(policy.canary).fields
        replica_fields = ReplicaMeasures.from_policy(policy.cold_start).fields
        return DeploymentState(name, policy, pair_fields, arm_fields, replica_fields)

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

    def _close(self, d: DeploymentState, low: float, final: bool) -> list[Verdict]:
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
        self._revisions[d.channel] += 1
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
            context = GuardContext(d, window)
            for guard in self.guards:
                judged = self._judge(guard, context, d)
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

    def _judge(
        self, guard: Guard, context: GuardContext, d: DeploymentState
    ) -> Verdict | list[Verdict] | None:
        """``guard``'s verdict at this close; if it raises, an error verdict, its state kept."""
        state = d.guard_state.get(guard.name)
        kept: bytes | None = None
        try:
            # The guard may change its state and then raise: keep a copy to put back. Pickling
            # is the copy (unpickled only on failure); a state that cannot be pickled fails the
            # guard like any other bug of it (Guard's docstring).
            kept = None if state is None else pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
            return guard.evaluate(context)
        except MemoryError:
            raise  # says nothing about the data: the worker stops (faust_app.halt)
        except Exception as exc:  # any bug of one guard: the others judge on
            if state is None:
                d.guard_state.pop(guard.name, None)
            elif kept is not None:  # (None here: the pickling itself failed, nothing ran)
                try:
                    d.guard_state[guard.name] = pickle.loads(kept)  # noqa: S301 - made above
                except Exception:  # a state that pickles but will not unpickle: start afresh
                    d.guard_state.pop(guard.name, None)
            context.forget()  # sums the failed guard read may have been changed in place
            context.failed.add(guard.name)
            start = float(context.window * context.window_s)  # as the guards date verdicts
            failure = GuardFailure.of(d.name, guard.name, start + context.window_s, exc)
            self.failures.append(failure)
            first = context.window - context.horizon_windows + 1
            return failure_verdict(failure, start, float(first * context.window_s))

    def take_failures(self) -> list[GuardFailure]:
        """The guard failures since the last call, oldest first."""
        out, self.failures = self.failures, []
        return out

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

    def _snapshot_deployment(self, d: DeploymentState) -> dict[str, Any]:
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
                    "open": [[i, t.to_dict(rows)] for i, t in sorted(s.open.items())],
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
            ChannelSource(watermark=float(w), offset=int(o)) for w, o in snapshot["sources"]
        ] or [ChannelSource() for _ in range(self.n_sources)]
        guards = {g.name: g for g in self.guards}
        for saved in snapshot["deployments"]:
            d = self._deployment(str(saved["name"]))
            d.channel = channel
            d.applied = {int(p): (int(hi), int(part)) for p, hi, part in saved["applied"]}
            d.last_closed = None if saved["last_closed"] is None else int(saved["last_closed"])
            d.streams = {}
            for st in saved["streams"]:
                fields = d.fields_of(str(st["stream"]))
                stream = Stream(fields, baseline_version=str(st["baseline_version"]))
                stream.registry.rows_for(list(st["labels"]))
                stream.open = {int(i): open_table(fields, table) for i, table in st["open"]}
                stream.closed = deque(
                    (int(i), frozen_table(fields, saved_table, len(stream.registry)))
                    for i, saved_table in st["closed"]
                )
                d.streams[(str(st["stream"]), str(st["version"]))] = stream
            d.untracked_slices = int(saved.get("untracked_slices", 0))
            d.items = {
                (str(it["stream"]), str(it["version"]), str(it.get("slice", ROOT))): ItemStreams(
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

    def open_windows(self, deployment: str) -> tuple[int, int]:
        """How many windows of ``deployment`` are open, and the bytes their tables hold.

        Open windows pile up while stage 1's partitions drift apart in event time (a backlog
        read faster on some partitions than others): what a burst costs stage 2.
        """
        d = self._deployments.get(deployment)
        if d is None:
            return 0, 0
        windows = {i for s in d.streams.values() for i in s.open}
        held = sum(t.nbytes() for s in d.streams.values() for t in s.open.values())
        return len(windows), held

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
