"""What stage 2 is told of a source partition's event time, and when.

Stage 2 closes a window once every source's watermark has passed its end plus the allowed
lateness (``docs/architecture.md``, "Time"). It hears of watermarks only in heartbeats: after a
flush, the watermark and offset that flush covered (:meth:`Watermarks.heartbeat`); between
flushes, the live watermark, when nothing pending can still belong to a window it closes
(:meth:`Watermarks.announce`). The rules for when to do which live here: a partition's watermark
passed a close (:meth:`Watermarks.closing`) or an end with data to send
(:meth:`Watermarks.ending`), a heartbeat alone may say so
(:meth:`Watermarks.announceable`), the timer may hold its data for a later flush
(:meth:`Watermarks.holdable`).
"""

import math
from typing import Any

from streamguard.core.stage1_state import HOLD_MAX, Source
from streamguard.policy import DeploymentPolicy

__all__ = ["Watermarks", "one_heartbeat"]


class Watermarks:
    """The watermark half of :class:`~streamguard.core.stage1.Stage1`, over its sources."""

    _sources: dict[int, Source]

    def watermark(self, partition: int) -> float:
        """Largest event time seen in ``partition`` (``-inf`` before any event)."""
        source = self._sources.get(partition)
        return source.watermark if source else -math.inf

    def closing(self, partition: int) -> bool:
        """Whether ``partition``'s watermark passed a window's close since its last flush.

        A window closes when every source's watermark passes its end plus the allowed lateness
        (per deployment policy). Until the partition's next flush, stage 2 cannot know: a flush
        right away, instead of at the timer's next tick, takes up to the flush interval out of
        every window's latency (``docs/architecture.md``, "Time").
        """
        source = self._sources.get(partition)
        if source is None:
            return False
        told = max(source.flushed_watermark, source.announced_watermark)
        if source.watermark <= told or source.flushed_watermark == -math.inf or source.replay:
            # Most messages: nothing passed. Or nothing flushed yet (the timer's first flush
            # carries it), or a restored partition replaying up to its recorded flush
            # boundaries, where it flushes only there.
            return False
        return _passed(source, told, lateness=True)

    def ending(self, partition: int) -> bool:
        """Whether ``partition``'s watermark just passed a window's end with data of an ended
        window waiting to be flushed (not :meth:`holdable`).

        The timer holds a window's data until the window ends and then sends it in one flush.
        At 20 deployments that flush is the largest step a window costs (~0.4 s of stage 1
        and stage 2 work for 8 partitions) and it must be done before the window closes, an
        allowed lateness later; waiting for the timer's next tick started it up to a second
        late (benchmarks/HISTORY.md). Looked at once per window end: a straggler for an ended
        window that arrives later is the timer's.
        """
        source = self._sources.get(partition)
        if source is None or source.replay or source.flushed_watermark == -math.inf:
            return False
        seen = max(source.flushed_watermark, source.end_checked)
        if source.watermark <= seen or not _passed(source, seen, lateness=False):
            return False
        source.end_checked = source.watermark
        return not self.holdable(partition)

    def announceable(self, partition: int) -> bool:
        """Whether a heartbeat alone may tell stage 2 ``partition``'s live watermark.

        It may when nothing waiting to be flushed belongs to a window that watermark closes:
        the data since the last flush is then all for windows it leaves open, and every event
        read from now on is judged against a watermark at least as high, so it can never add to
        a window the heartbeat lets stage 2 close. At a close with the default lateness (5 s,
        five timer flushes) that is the rule: the closing window's data has long been sent.
        A flush at a close instead ships every pending group, almost all of the *current*
        window, and stage 2 merges them before the heartbeat behind them: at 20 deployments
        that was most of a close's latency (benchmarks/HISTORY.md).
        """
        source = self._sources.get(partition)
        if source is None or source.replay or source.outbox:
            return False  # a replay cuts only at its boundaries; held partials go first
        return _pending_from(source, lateness=True)

    def holdable(self, partition: int) -> bool:
        """Whether ``partition``'s data since its last flush may wait for a later flush.

        It may while all of it belongs to windows that have not ended (the watermark has not
        passed their end) and it is fewer than :data:`HOLD_MAX` events. Stage 2 needs a
        window's data only when the window closes, its allowed lateness after its end, and
        a flush costs a fixed amount per (deployment, stream, version, window) group whatever
        the group holds: at 20 deployments flushing every partition every second was most of
        a worker's time (benchmarks/HISTORY.md). Held, a window's data goes out in about one
        flush, at the first tick after the window ends (or with a snapshot), instead of one
        per tick. Holdable implies :meth:`announceable` (a window ends before it closes), so
        the timer tells stage 2 the live watermark of a held partition in a heartbeat.
        """
        source = self._sources.get(partition)
        if source is None or source.replay or source.outbox or source.unflushed >= HOLD_MAX:
            return False
        return _pending_from(source, lateness=False)

    def announce(
        self, partitions: list[int], caught_up: dict[int, bool] | None = None
    ) -> dict[str, Any]:
        """A heartbeat with the live watermark and offset of each of ``partitions``.

        Only for partitions :meth:`announceable` says yes to. No flush, so no boundary: what a
        replay cuts is unchanged, and the data since the last flush goes with the next one.
        """
        known = caught_up or {}
        entries = []
        for partition in sorted(partitions):
            source = self._sources[partition]
            source.announced_watermark = max(source.announced_watermark, source.watermark)
            entries.append(
                _beat(partition, source.watermark, source.offset_hi, known.get(partition, True))
            )
        return {"schema_version": 1, "kind": "heartbeat", "sources": entries}

    def heartbeat(
        self, partitions: list[int] | None = None, caught_up: dict[int, bool] | None = None
    ) -> dict[str, Any]:
        """Watermark and offset each owned partition had at its last flush.

        Sent to every stage-2 partition after the partials of that flush. ``caught_up`` says
        which partitions have no unread messages: only those may be treated as idle by stage 2
        (a partition with a backlog is slow, not idle). Unknown means caught up (replay).
        """
        known = caught_up or {}
        entries: list[dict[str, Any]] = []
        for partition in sorted(self._sources if partitions is None else partitions):
            source = self._sources.get(partition)
            flushed = (
                (-math.inf, -1)
                if source is None
                else (source.flushed_watermark, source.flushed_offset)
            )
            entries.append(_beat(partition, *flushed, known.get(partition, True)))
        return {"schema_version": 1, "kind": "heartbeat", "sources": entries}


def _first_open(watermark: float, policy: DeploymentPolicy, lateness: bool = True) -> int:
    """The first window ``watermark`` leaves open: window w closes once
    ``(w + 1) * window_s + allowed_lateness_s <= watermark``. Without ``lateness``, the first
    window it has not ended (``(w + 1) * window_s > watermark``)."""
    late = policy.allowed_lateness_s if lateness else 0.0
    return math.floor((watermark - late) / policy.window_s)


def _passed(source: Source, since: float, lateness: bool) -> bool:
    """Whether ``source``'s watermark passed a window's close (``lateness``) or end (without)
    that the watermark ``since`` had not, for any of its deployments."""
    return any(
        _first_open(source.watermark, s.policy, lateness) > _first_open(since, s.policy, lateness)
        for s in source.deployments.values()
    )


def _pending_from(source: Source, lateness: bool) -> bool:
    """Whether all of ``source``'s unflushed groups and item counts belong to windows its
    watermark leaves open (``lateness``) or has not ended (without)."""
    pending: list[tuple[Any, ...]] = [*source.groups, *source.items]
    if source.watermark == -math.inf:  # nothing accounted yet
        return not pending
    first = {
        name: _first_open(source.watermark, s.policy, lateness)
        for name, s in source.deployments.items()
    }
    # Group keys are (deployment, stream, version, window, ...).
    return not any(key[3] < first[key[0]] for key in pending)


def one_heartbeat(
    beat: dict[str, Any], flushed: list[int], announced: dict[str, Any]
) -> dict[str, Any]:
    """``beat``'s entries for the ``flushed`` partitions and the ``announced`` (held) ones, in
    partition order: what a flush tells stage 2 (:meth:`Watermarks.heartbeat`,
    :meth:`Watermarks.announce`)."""
    keep = set(flushed)
    sources = [e for e in beat["sources"] if e["partition"] in keep] + announced["sources"]
    return {**beat, "sources": sorted(sources, key=lambda entry: entry["partition"])}


def _beat(partition: int, watermark: float, offset: int, caught_up: bool) -> dict[str, Any]:
    """One partition's entry in a heartbeat."""
    return {
        "partition": partition,
        "watermark": None if watermark == -math.inf else watermark,
        "offset": offset,
        "caught_up": caught_up,
    }
