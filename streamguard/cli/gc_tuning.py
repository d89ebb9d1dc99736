"""Tuning of the worker's garbage collector: fewer collections for a little more memory.

``streamguard worker`` freezes the objects startup built and collects the young generation
every N net allocations of container objects instead of CPython's 700, N being
``STREAMGUARD_GC_YOUNG_THRESHOLD`` (20000 by default; 0 leaves the collector alone). It
trades memory for CPU (benchmarks/HISTORY.md):

* CPU (2026-11-24, worker runs measured with ``gc.callbacks``): collections took 0.96-1.13 s
  of a worker run of 1.2M events in batch envelopes and 1.23-1.30 s of 120k one-event
  messages, about a tenth of the worker's CPU; with N = 20000, 0.13-0.15 s and 0.37-0.39 s.
* Memory (2026-11-25, ``python -m benchmarks.memory``, stage 2's open windows kept as cells):
  the 10,000-slice burst peaked at 722-796 MB in three runs with N = 20000 against 694-737 MB
  in four without; RSS kept 527-546 MB against 522-533 MB. With events (1,000 slices, four
  equal bursts of N events, RSS after N, 2N, 3N, 4N): 156/165/174/171, 157/170/177/164 and
  160/170/151/157 MB with it (4N over N 1.093, 1.045, 0.981) against 1.031-1.119 in four runs
  without: no growth with events either way. It was opt-in until then because the earlier
  measure (one burst of 3N events after N) gave 1.12-1.16 with it against 0.95-1.08 without;
  that measure mixed burst size with events.
"""

import gc

__all__ = ["tune_gc"]


def tune_gc(young_threshold: int) -> None:
    """Freeze the objects alive now and collect the young generation every
    ``young_threshold`` net allocations (0: leave the collector as it is).

    Examples
    --------
    >>> import gc
    >>> before = gc.get_threshold()
    >>> tune_gc(0)
    >>> gc.get_threshold() == before
    True
    """
    if young_threshold <= 0:
        return
    gc.collect()  # what is garbage already must not be frozen with the rest
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
