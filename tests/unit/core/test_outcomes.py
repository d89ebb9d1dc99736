"""The columnar outcome join against a plain reference: one object per exposure, sorted."""

from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.core.outcomes import OutcomeJoin


@dataclass
class _Open:
    request_id: str
    role: int
    version: str
    combo: int
    ts: float
    value: float
    seq: int


class Reference:
    """What the join must do, written the slow and obvious way."""

    def __init__(self, window_s: float, max_pending: int) -> None:
        self.window_s, self.max_pending = window_s, max_pending
        self.open: dict[str, _Open] = {}
        self.seq = 0
        self.evicted = 0

    def expose(self, ids, roles, versions, combos, ts) -> None:
        for row in zip(ids, roles, versions, combos, ts, strict=True):
            if row[0] not in self.open:
                self.seq += 1
                self.open[row[0]] = _Open(*row, value=0.0, seq=self.seq)

    def outcome(self, ids, values) -> int:
        unmatched = 0
        for request_id, value in zip(ids, values, strict=True):
            if request_id in self.open:
                self.open[request_id].value += value
            else:
                unmatched += 1
        return unmatched

    def mature(self, watermark: float) -> list[tuple]:
        limit = watermark - self.window_s
        ordered = sorted(self.open.values(), key=lambda e: (e.ts, e.seq))
        out = []
        for e in ordered:
            if e.ts < limit or len(self.open) > self.max_pending:
                if e.ts >= limit:
                    self.evicted += 1
                del self.open[e.request_id]
                out.append((e.request_id, e.role, e.version, e.combo, e.ts, e.value))
            else:
                break
        return out


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("expose"),
            st.lists(
                st.tuples(
                    st.integers(0, 30),  # request ids repeat, within a batch and across them
                    st.sampled_from([0, 2]),
                    st.sampled_from(["v1", "v2@0.1"]),
                    st.integers(0, 5),
                    st.integers(0, 100),
                ),
                max_size=12,
            ),
        ),
        st.tuples(
            st.just("outcome"),
            st.lists(st.tuples(st.integers(0, 40), st.sampled_from([0.1, 1.0, 0.3])), max_size=8),
        ),
        st.tuples(st.just("mature"), st.integers(0, 200)),
        st.tuples(st.just("restore"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(1, 15))
def test_the_join_matches_the_reference(script: list, max_pending: int) -> None:
    join, ref = OutcomeJoin(50.0, max_pending), Reference(50.0, max_pending)
    for kind, arg in script:
        if kind == "expose":
            columns = list(zip(*arg, strict=True)) or [[], [], [], [], []]
            ids = [f"r{i}" for i in columns[0]]
            roles, versions = list(columns[1]), list(columns[2])
            combos, ts = list(columns[3]), [float(t) for t in columns[4]]
            join.expose(ids, np.array(roles, np.int8), versions, np.array(combos), np.array(ts))
            ref.expose(ids, roles, versions, combos, ts)
        elif kind == "outcome":
            ids = [f"r{i}" for i, _ in arg]
            values = [v for _, v in arg]
            assert join.outcome(ids, values) == ref.outcome(ids, values)
        elif kind == "mature":
            got = join.mature(float(arg))
            rows = list(
                zip(
                    got.request_id,
                    got.role.tolist(),
                    got.version,
                    got.combo.tolist(),
                    got.ts.tolist(),
                    got.value.tolist(),
                    strict=True,
                )
            )
            assert rows == ref.mature(float(arg))  # the same sums, to the bit, in order
            assert join.evicted == ref.evicted
        else:
            restored = OutcomeJoin(50.0, max_pending)
            restored.restore(join.snapshot())
            assert _same(restored.snapshot(), join.snapshot())
            restored.evicted = join.evicted  # a counter for metrics, not state
            join = restored
        assert len(join) == len(ref.open)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a
    )


def test_groups_split_matured_exposures_by_arm() -> None:
    join = OutcomeJoin(10.0, 100)
    join.expose(
        ["a", "b", "c"],
        np.array([0, 2, 0], np.int8),
        ["v1", "v2", "v1"],
        [1, 2, 3],
        [0.0, 1.0, 2.0],
    )
    matured = join.mature(100.0)
    assert [(r, v, p.tolist()) for r, v, p in matured.groups()] == [
        (0, "v1", [0, 2]),
        (2, "v2", [1]),
    ]
    assert len(join) == 0
    assert len(join.mature(200.0)) == 0
