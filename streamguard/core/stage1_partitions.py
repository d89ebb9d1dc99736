"""The state stage 1 keeps per source partition: ownership, snapshots and restores.

:class:`Partitions` holds one :class:`~streamguard.core.stage1_state.Source` per source
partition a worker owns, and per deployment in it the slice coder, the pairing buffer and the
outcome join. :meth:`Partitions.snapshot` is taken right after a flush (nothing unflushed),
and :meth:`Partitions.restore` rebuilds the partition with the flush boundaries recorded
since, so that processing from the snapshot's offset reproduces the partials sent before a
restart byte for byte. :class:`~streamguard.core.stage1.Stage1` does the processing on top.
"""

from collections import deque
from typing import Any

from streamguard.core.environments import EnvMeasures
from streamguard.core.measures import ArmMeasures, PairMeasures
from streamguard.core.outcomes import OutcomeJoin
from streamguard.core.pairing import PairingBuffer
from streamguard.core.partials import MAX_PARTIAL_BYTES
from streamguard.core.replicas import ReplicaMeasures
from streamguard.core.slices import SliceCoder
from streamguard.core.stage1_state import DeploymentState, Source
from streamguard.core.stage1_watermarks import Watermarks
from streamguard.policy import Policy

__all__ = ["Partitions"]


class Partitions(Watermarks):
    """Per source partition state of stage 1: what a worker owns, snapshots, restores."""

    def __init__(self, policy: Policy, max_partial_bytes: int = MAX_PARTIAL_BYTES) -> None:
        self.policy = policy
        # One size for every flush, including those reproduced after a restore: the same data
        # must split into the same parts with the same stamps.
        self.max_partial_bytes = max_partial_bytes
        self._sources: dict[int, Source] = {}

    # -- ownership -----------------------------------------------------------------------------

    def partitions(self) -> list[int]:
        """Source partitions with state."""
        return sorted(self._sources)

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked from this worker)."""
        self._sources.pop(partition, None)

    def pending(self, partition: int) -> int:
        """Halves waiting for a partner in ``partition``."""
        source = self._sources.get(partition)
        if source is None:
            return 0
        return sum(len(d.pairing) for d in source.deployments.values())

    # -- state ---------------------------------------------------------------------------------

    def _source(self, partition: int) -> Source:
        source = self._sources.get(partition)
        if source is None:
            source = self._sources[partition] = Source(partition)
        return source

    def _deployment(self, source: Source, name: str) -> DeploymentState:
        state = source.deployments.get(name)
        if state is None:
            policy = self.policy.for_deployment(name)
            state = source.deployments[name] = DeploymentState(
                name=name,
                policy=policy,
                coder=SliceCoder(policy.slices),
                pairing=PairingBuffer(policy.pair_ttl_s, policy.max_pending),
                measures=PairMeasures.from_policy(policy.shadow),
                arms=ArmMeasures.from_policy(policy.canary),
                join=OutcomeJoin(policy.canary.outcome_join_s, policy.canary.max_exposures),
                replicas=ReplicaMeasures.from_policy(policy.cold_start),
                envs=EnvMeasures.from_policy(policy.determinism),
            )
        return state

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self, partition: int) -> dict[str, Any]:
        """State of ``partition`` right after :meth:`flush` (nothing left to send).

        Raises
        ------
        ValueError
            If measurements are waiting to be flushed (they are not part of a snapshot).
        """
        source = self._sources.get(partition)
        if source is None:
            return {"partition": partition, "offset": -1, "deployments": {}}
        if not self.settled(partition):
            raise ValueError(f"partition {partition} has unflushed measurements")
        # The boundaries stay until the snapshot is stored (snapshot_stored): if the state
        # topic refuses it, the older snapshot a restart falls back to still needs them.
        return {
            "partition": partition,
            "offset": source.offset_hi,
            "watermark": source.watermark,
            "flushed_offset": source.flushed_offset,
            "flushed_watermark": source.flushed_watermark,
            "deployments": {
                name: {
                    "coder": state.coder.snapshot(),
                    "pairing": state.pairing.snapshot(),
                    "join": state.join.snapshot(),
                    "shadowed": state.shadowed,
                }
                for name, state in sorted(source.deployments.items())
            },
        }

    def snapshot_stored(self, partition: int, offset: int) -> None:
        """A snapshot of ``partition`` taken at ``offset`` is stored: forget boundaries up to it.

        Only then: a progress record that lacked boundaries between the stored snapshot and a
        refused one would make a restart cut one partial over data stage 2 already applied in
        several, stamped above them, so counted twice.
        """
        source = self._sources.get(partition)
        if source is not None:
            source.boundaries = [b for b in source.boundaries if b > offset]
            source.skipped = [s for s in source.skipped if s > offset]

    def replaying(self, partition: int) -> bool:
        """True while ``partition`` replays toward recorded flush boundaries or holds partials
        not sent yet: stage 2 has heard less of it than it read, so it may be the partition
        that holds stage 2's low watermark back, and backpressure must not pause it."""
        source = self._sources.get(partition)
        return source is not None and bool(source.replay or source.outbox)

    def settled(self, partition: int) -> bool:
        """True when ``partition`` has nothing waiting: no replay left, nothing unflushed."""
        source = self._sources.get(partition)
        return source is None or not (
            source.groups
            or source.items
            or source.offset_hi > source.offset_lo
            or source.replay
            or source.outbox
            or len(source.run)
        )

    def progress(self, partition: int) -> dict[str, Any]:
        """The flush boundaries since the last stored snapshot; store it before sending partials.

        A restored partition still replaying lists the recorded boundaries it has not reached
        yet too: a second restart before it reaches them must still flush and cut there. The
        offsets left out since (quarantine) come with them, for the same reason.
        """
        source = self._sources.get(partition)
        boundaries = list(source.boundaries) + list(source.replay) if source else []
        skipped = sorted({*source.skipped, *source.replay_skips}) if source else []
        return {
            "partition": partition,
            "offset": boundaries[-1] if boundaries else -1,
            "boundaries": boundaries,
            "skipped": skipped,
        }

    def restore(
        self,
        partition: int,
        snapshot: dict[str, Any] | None,
        progress: dict[str, Any] | None = None,
    ) -> int:
        """Rebuild ``partition`` from a snapshot and the last progress record.

        Returns the first offset to read. Processing from there flushes again exactly at the
        recorded boundaries, so the partials sent before the restart are reproduced byte for
        byte (stage 2 drops those it already applied and applies any that were lost).
        """
        self._sources.pop(partition, None)
        if snapshot is None or int(snapshot["offset"]) < 0:
            source = self._source(partition)
            offset = -1
        else:
            offset = int(snapshot["offset"])
            source = self._sources[partition] = Source(
                partition,
                watermark=float(snapshot["watermark"]),
                offset_lo=offset,
                offset_hi=offset,
                flushed_watermark=float(snapshot["flushed_watermark"]),
                flushed_offset=int(snapshot["flushed_offset"]),
            )
            for name, saved in snapshot["deployments"].items():
                state = self._deployment(source, name)
                state.coder.restore(saved["coder"])
                state.pairing.restore(saved["pairing"])
                state.join.restore(saved["join"])
                state.shadowed = bool(saved["shadowed"])
        if progress is not None:
            source.replay = deque(sorted(int(b) for b in progress["boundaries"] if int(b) > offset))
            # Records written before quarantine have none.
            source.replay_skips = {int(s) for s in progress.get("skipped", ()) if int(s) > offset}
        return offset + 1
