"""The engine makes no reference cycles at steady state.

A cycle is freed only by the garbage collector, not when its last outside reference goes, so
whatever it holds (a guard's arrays for every slice, say) stays alive until the next
collection of its generation; the later that comes (``STREAMGUARD_GC_YOUNG_THRESHOLD``), the
longer. A recursive closure in ``explain`` did this once: every shadow-guard close left a
cycle holding the guard's per-slice arrays.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from streamguard.engine import Pipeline
from streamguard.guards.explain import explain
from streamguard.policy import Policy
from streamguard.sim import ShadowDeviation, TrafficGenerator
from streamguard.testing import envelopes


@contextmanager
def saved_garbage() -> Iterator[list[object]]:
    """Collect what becomes cyclic garbage inside the block (into the yielded list)."""
    found: list[object] = []
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()
        gc.collect()


def test_explaining_leaves_no_cycle() -> None:
    labels = ["*", "platform=ios", "platform=web", "platform=web,region=eu", "region=eu"]
    with saved_garbage() as garbage:
        found = explain(labels, set(labels) - {"platform=ios"}, lambda parent, children: "clean")
    assert found == ["platform=web,region=eu"]
    assert garbage == []


def test_steady_traffic_through_the_engine_leaves_no_cycle() -> None:
    """Two minutes of traffic with a deviation (so guards explain findings and commands go
    out), one message per partition and second, after a first minute that warms caches up."""
    gen = TrafficGenerator(
        rate=400,
        seed=3,
        start_ts=1_790_000_000.0,
        deviation=ShadowDeviation({"platform": "android"}, after_s=30, shift=0.2),
    )
    pipe = Pipeline(Policy(), partitions=8)
    seconds = gen.seconds(180)
    for events in (next(seconds) for _ in range(60)):
        for _, _, value in envelopes(events, 8):
            pipe.feed(value)
    with saved_garbage() as garbage:
        for events in seconds:
            for _, _, value in envelopes(events, 8):
                pipe.feed(value)
        pipe.finish()
    assert pipe.commands, "the deviation was not found: the guards' paths were not run"
    assert [type(o).__qualname__ for o in garbage] == []
