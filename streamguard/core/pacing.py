"""Backpressure from stage 2 to stage 1: which source partitions to stop reading for a while.

Stage 2 holds a deployment's windows open until every source partition's watermark has
passed them. When stage 1 reads faster than stage 2 merges (a backlog at many slices: in the
10,000-slice burst of ``benchmarks/memory.py`` stage 1 was done 28 s before stage 2, with up
to 25 windows open per deployment; ``benchmarks/HISTORY.md``), or faster on some partitions
than others, what lies between stage 2's low watermark and stage 1's newest data is held in
memory: partials waiting to be merged and windows waiting to close. A :class:`Pacer` bounds
that span: a partition whose watermark is more than ``max_ahead_s`` ahead of stage 2's low
watermark is paused until it is within half of that (the hysteresis keeps a partition near
the bound from pausing and resuming at every look).

A partition at stage 2's low watermark is never paused, so the slowest source keeps
advancing; when every partition is paused, stage 2 is behind in reading what stage 1 already
sent, and it reads that without stage 1. An unknown low watermark (-inf: some source not heard
of yet; NaN) pauses nothing. Pausing only delays reading; the worker's adapter resumes a
paused partition at the first offset it did not deliver (:mod:`streamguard.faust_app.pacing`).
"""

import math
from collections.abc import Mapping

__all__ = ["Pacer"]


class Pacer:
    """Which partitions to hold paused, looked at again at every :meth:`update`.

    Parameters
    ----------
    max_ahead_s
        How far (event-time seconds) a partition may run ahead of stage 2's low watermark
        before it is paused; it resumes once within ``max_ahead_s / 2``. 0 turns pacing off.

    Examples
    --------
    Partition 1 runs 100 s ahead of stage 2 and is paused; it resumes once within 30 s.

    >>> pacer = Pacer(max_ahead_s=60.0)
    >>> sorted(pacer.update({0: 1000.0, 1: 1100.0, 2: 1050.0}, low=1000.0))
    [1]
    >>> sorted(pacer.update({0: 1020.0, 1: 1100.0, 2: 1070.0}, low=1020.0))  # 2: 50 ahead
    [1]
    >>> sorted(pacer.update({0: 1045.0, 1: 1100.0, 2: 1070.0}, low=1045.0))  # 1: 55 ahead
    [1]
    >>> sorted(pacer.update({0: 1075.0, 1: 1100.0, 2: 1080.0}, low=1075.0))  # 1: 25 ahead
    []
    """

    def __init__(self, max_ahead_s: float) -> None:
        if not (math.isfinite(max_ahead_s) and max_ahead_s >= 0):
            raise ValueError(f"max_ahead_s must be a finite number >= 0, got {max_ahead_s}")
        self.max_ahead_s = max_ahead_s
        self.paused: set[int] = set()
        self.pauses = 0  # partitions paused so far (each pause counts once)

    def update(self, watermarks: Mapping[int, float], low: float) -> set[int]:
        """The partitions to hold paused now, of ``watermarks`` (partition -> its watermark).

        ``low`` is stage 2's low watermark. Partitions not in ``watermarks`` (revoked) are
        forgotten.
        """
        if not self.max_ahead_s or not math.isfinite(low):
            self.paused = set()
            return set()
        pause_above = low + self.max_ahead_s
        resume_at = low + self.max_ahead_s / 2
        paused = set()
        for partition, watermark in watermarks.items():
            if partition in self.paused:
                if watermark > resume_at:
                    paused.add(partition)
            elif watermark > pause_above:
                paused.add(partition)
                self.pauses += 1
        self.paused = paused
        return set(paused)
