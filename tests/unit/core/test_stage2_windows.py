"""``GuardContext.windows`` against ``recent`` and ``closed_window`` on real stage-2 state."""

import numpy as np

from streamguard.core.verdict import GuardContext
from streamguard.engine import Pipeline
from streamguard.guards.base import StatelessGuard
from streamguard.guards.stratification import CANARY_STREAM
from streamguard.policy import Policy
from streamguard.sim import Canary, TrafficGenerator
from streamguard.stats import merge_moments
from streamguard.testing import envelopes

NAMES = frozenset({"events", "errors", "latency"})


class Probe(StatelessGuard):
    """A guard that only checks what the context gives it, at every close."""

    name = "probe"

    def __init__(self) -> None:
        super().__init__(lambda _: None)
        self.checked = 0
        self.empty_windows = 0

    def evaluate(self, ctx: GuardContext) -> None:
        versions = ctx.versions(CANARY_STREAM)
        if not versions:
            return
        for k in (1, 4, 40):  # 40 is clamped to the horizon
            labels, windows = ctx.windows(CANARY_STREAM, versions[0], k, NAMES)
            assert len(windows) == min(k, ctx.horizon_windows)
            assert all(set(w) == NAMES for w in windows)
            recent_labels, recent = ctx.recent(CANARY_STREAM, versions[0], k)
            assert labels == recent_labels
            assert sum(w["events"] for w in windows).tolist() == recent["events"].tolist()
            assert sum(w["errors"] for w in windows).tolist() == recent["errors"].tolist()
            merged = windows[0]["latency"]
            for w in windows[1:]:
                merged = merge_moments(merged, w["latency"])
            np.testing.assert_allclose(merged, recent["latency"], rtol=1e-9, atol=1e-9)
            self.empty_windows += sum(int(w["events"].sum() == 0) for w in windows)
        closed = ctx.closed_window(CANARY_STREAM, versions[0])
        _, last = ctx.windows(CANARY_STREAM, versions[0], 1, NAMES)
        if closed is not None:
            assert last[0]["events"].tolist() == closed[1]["events"].tolist()
        else:
            assert not last[0]["events"].any()
        self.checked += 1


def test_windows_are_the_pieces_of_recent_and_the_last_is_the_closed_one() -> None:
    gen = TrafficGenerator(
        rate=100.0, seed=4, start_ts=1_790_000_000.0, shadow=False, canary=Canary(share=0.3)
    )
    pipeline = Pipeline(Policy(), partitions=2)
    probe = Probe()
    pipeline.stage2.guards.append(probe)
    for events in gen.seconds(150):
        for _, _, value in envelopes(events, 2):
            pipeline.feed(value)
    pipeline.finish()
    assert probe.checked >= 10
    assert probe.empty_windows > 0  # windows before the canary's first are zeros
