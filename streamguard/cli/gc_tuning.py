"""Opt-in tuning of the worker's garbage collector: fewer collections for more memory.

``STREAMGUARD_GC_YOUNG_THRESHOLD=N`` (N > 0) makes ``streamguard worker`` freeze the objects
startup built and collect the young generation every N net allocations of container objects
instead of CPython's 700. Off by default, because it trades memory for CPU (README,
"Benchmarks"; 2026-11-24, worker runs measured with ``gc.callbacks``):

* CPU: collections took 0.96-1.13 s of a worker run of 1.2M events in batch envelopes and
  1.23-1.30 s of 120k one-event messages, about a tenth of the worker's CPU; with N = 20000,
  0.13-0.15 s and 0.37-0.39 s.
* Memory: cycles are collected later. With N = 20000 the worker's peak while it read a
  10,000-slice burst was 1.69-2.10 GB in three runs against 1.42-1.96 GB in four without (the
  ranges overlap), and RSS after 4N events over after N was 1.05-1.10 against 1.00-1.08 (the
  benchmark's bound is 1.10). Raising the oldest threshold instead (700, 10, 1000) halved the
  collections' time and gave 1.10 and 1.13. On 2026-11-25, after a reference cycle in
  ``explain()`` (holding a guard's per-slice arrays) was removed, growth was still 1.121 and
  1.162 tuned against 0.970 and 0.949 untuned, so it stays opt-in.
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
