"""One random change to a JSON document: the way tests feed internal topics' junk to a stage."""

import copy
from typing import Any

import orjson
from hypothesis import strategies as st

__all__ = ["JUNK", "mutated", "paths"]

#: Values a field of a JSON document is replaced with.
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.sampled_from(["pause", "rollback", "resume", "notice", "schemas", "*", "a=b"]),
    st.lists(st.integers(min_value=-3, max_value=300), max_size=4),
    st.just({}),
    st.just([{}]),
    st.just([[1], [2, 3]]),
)


def paths(value: Any, path: tuple[Any, ...] = (), rows: int = 4) -> list[tuple[Any, ...]]:
    """Every position in a JSON value, keys and list indices down to the leaves.

    Only the first ``rows`` items of a list are entered: they stand for the rest.
    """
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(paths(item, (*path, key), rows))
    elif isinstance(value, list):
        for index, item in enumerate(value[:rows]):
            out.extend(paths(item, (*path, index), rows))
    return out


def mutated(document: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """A copy of ``document`` with one field deleted or replaced, as read back from JSON."""
    broken = copy.deepcopy(document)
    path = data.draw(st.sampled_from([p for p in paths(broken) if p]), label="path")
    parent = broken
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and data.draw(st.booleans(), label="delete"):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JUNK, label="value")
    return orjson.loads(orjson.dumps(broken))
