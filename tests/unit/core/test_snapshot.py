"""Snapshots split into the changing rest and parts written once (closed windows)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.core.snapshot import Part, SnapshotError, pack, split, unpack

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


def stored(parts: dict[str, Part]) -> dict[str, bytes]:
    return {name: part.packed() for name, part in parts.items()}


def same(a: object, b: object) -> bool:
    """Equality with NaN equal to itself (snapshots keep NaN as NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@given(rest=values, closed=st.lists(values, max_size=4))
def test_split_with_its_parts_unpacks_to_what_pack_unpacks_to(rest: object, closed: list) -> None:
    state = {"rest": rest, "closed": [Part(c) for c in closed]}
    main, parts = split(state)
    assert same(unpack(main, stored(parts)), unpack(pack(state)))
    assert same(unpack(pack(state)), {"rest": rest, "closed": closed})
    assert len(parts) == len({Part(c).name for c in closed})  # equal content: one part


def test_parts_are_named_by_their_content() -> None:
    a, b = {"cells": np.arange(5)}, {"cells": np.arange(6)}
    assert Part(a).name == Part({"cells": np.arange(5)}).name
    assert Part(a).name != Part(b).name
    part = Part(a)
    assert unpack(part.packed())["cells"].tolist() == [0, 1, 2, 3, 4]


def test_a_missing_part_is_a_snapshot_error_not_a_hole() -> None:
    main, parts = split({"closed": [Part({"n": 1}), Part({"n": 2})]})
    kept = stored(parts)
    kept.pop(sorted(kept)[0])
    with pytest.raises(SnapshotError, match="is not stored"):
        unpack(main, kept)
    with pytest.raises(SnapshotError, match="is not stored"):
        unpack(main)
    with pytest.raises(SnapshotError):
        unpack(main, dict.fromkeys(parts, b"not zlib"))


@pytest.mark.parametrize(
    "value",
    [
        [1e308, 1e308],  # finite numbers whose sum overflows
        [1.0, math.inf, -math.inf],
        [[0.5, math.nan], (2, -math.inf)],
        [True, 2, 3.5],
        ["a", 1.0, None],
        ["r1", None, True, 7],  # plain values only: kept as they are
        [["r1", "r2"], [1, math.inf]],
    ],
)
def test_lists_keep_their_non_finite_floats(value: list) -> None:
    assert same(unpack(pack({"v": value})), {"v": orjson_shape(value)})


def orjson_shape(value: object) -> object:
    """Tuples come back as lists."""
    if isinstance(value, list | tuple):
        return [orjson_shape(v) for v in value]
    return value


def test_numpy_floats_and_arrays_in_lists_survive() -> None:
    back = unpack(pack({"a": np.float64("inf"), "b": [np.float32("-inf"), np.float64("nan")]}))
    assert back["a"] == math.inf
    assert back["b"][0] == -math.inf
    assert math.isnan(back["b"][1])
    arrays = unpack(pack({"x": [np.zeros(2), np.ones(3)]}))["x"]  # sum() cannot broadcast them
    assert [a.tolist() for a in arrays] == [[0.0, 0.0], [1.0, 1.0, 1.0]]
