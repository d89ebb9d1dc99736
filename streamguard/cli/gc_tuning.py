"""The worker's garbage collector: startup's objects frozen, young collections made rarer.

A worker's heap holds a few hundred thousand long-lived objects (Faust, aiokafka, the
engine's state, events held until a snapshot covers them). CPython's defaults collect the
young generation every 700 net allocations of container objects and, as survivors pile up,
run full collections that walk the whole heap: at one event per message and with batch
envelopes both, about a tenth of the worker's CPU went to collections (measured with
``gc.callbacks``; README, "Benchmarks").

Reference counting frees nearly everything a worker makes (decoded events, arrays, partials);
the collector only matters for cycles, which a larger young generation still collects, later.
So garbage in cycles is bounded by the threshold's count of objects, and what startup built,
which lives as long as the process, is frozen out of every collection (``gc.freeze``).
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
