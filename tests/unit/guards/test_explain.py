"""The smallest slices that explain a breach, on hand-built slice lattices.

A lattice is built from *cells* (full combinations of dimension values), each with a number
of pairs and a deviation. A slice's deviation is the pair-weighted mean over its cells; it
breaches at ``THRESHOLD`` with at least ``MIN_PAIRS`` pairs. What is left of a parent without
some children is ``clean`` with enough pairs and a deviation well under the threshold,
``elevated`` with enough pairs otherwise, and ``unknown`` with too few pairs.
"""

from itertools import combinations, product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.guards import explain
from streamguard.guards.explain import Rest

THRESHOLD = 0.1
MIN_PAIRS = 50

Cell = tuple[tuple[str, str], ...]  # ((dimension, value), ...) sorted by dimension


class Lattice:
    def __init__(self, dims: dict[str, list[str]], pairs: int = 100) -> None:
        self.dims = dict(sorted(dims.items()))
        names = list(self.dims)
        self.cells: dict[Cell, list[float]] = {
            tuple(zip(names, values, strict=True)): [float(pairs), 0.0]
            for values in product(*self.dims.values())
        }

    def deviate(self, where: dict[str, str], deviation: float, pairs: float | None = None) -> None:
        for cell, stats in self.cells.items():
            if all(dict(cell)[k] == v for k, v in where.items()):
                stats[1] = deviation
                if pairs is not None:
                    stats[0] = pairs

    @staticmethod
    def label(where: dict[str, str]) -> str:
        return ",".join(f"{k}={where[k]}" for k in sorted(where)) or "*"

    @staticmethod
    def parse(label: str) -> dict[str, str]:
        return {} if label == "*" else dict(part.split("=") for part in label.split(","))

    def labels(self) -> list[str]:
        out = set()
        for cell in self.cells:
            for size in range(len(cell) + 1):
                for subset in combinations(cell, size):
                    out.add(self.label(dict(subset)))
        return sorted(out)

    def members(self, label: str) -> set[Cell]:
        where = self.parse(label)
        return {c for c in self.cells if all(dict(c)[k] == v for k, v in where.items())}

    def stat(self, cells: set[Cell]) -> tuple[float, float]:
        n = sum(self.cells[c][0] for c in cells)
        dev = sum(self.cells[c][0] * self.cells[c][1] for c in cells) / n if n else 0.0
        return n, dev

    def firing(self) -> set[str]:
        out = set()
        for label in self.labels():
            n, dev = self.stat(self.members(label))
            if n >= MIN_PAIRS and dev >= THRESHOLD:
                out.add(label)
        return out

    def rest(self, parent: str, children: list[str]) -> Rest:
        rest = self.members(parent) - set().union(*(self.members(c) for c in children))
        n, dev = self.stat(rest)
        if n < MIN_PAIRS:
            return "unknown"
        return "clean" if dev < 0.5 * THRESHOLD else "elevated"

    def explain(self) -> list[str]:
        return explain(self.labels(), self.firing(), self.rest)


DIMS = {"platform": ["android", "ios", "web"], "tier": ["free", "premium"]}


def test_nothing_firing_explains_nothing() -> None:
    assert Lattice(DIMS).explain() == []


def test_deviation_in_a_leaf() -> None:
    lattice = Lattice(DIMS)
    lattice.deviate({"platform": "android", "tier": "free"}, 0.3)
    # The leaf, its platform and its tier breach (diluted); '*' does not (0.05).
    assert lattice.firing() == {"platform=android,tier=free", "platform=android", "tier=free"}
    assert lattice.explain() == ["platform=android,tier=free"]


def test_deviation_in_one_dimension_value() -> None:
    lattice = Lattice(DIMS)
    lattice.deviate({"platform": "android"}, 0.3)
    firing = lattice.firing()
    assert {"*", "platform=android", "tier=free", "tier=premium"} <= firing
    assert {"platform=android,tier=free", "platform=android,tier=premium"} <= firing
    # Every child of android breaches, so the children narrow nothing down.
    assert lattice.explain() == ["platform=android"]


def test_two_unrelated_slices() -> None:
    lattice = Lattice(DIMS)
    lattice.deviate({"platform": "android", "tier": "free"}, 0.6)
    lattice.deviate({"platform": "ios", "tier": "premium"}, 0.6)
    assert "*" in lattice.firing()
    assert lattice.explain() == ["platform=android,tier=free", "platform=ios,tier=premium"]


def test_two_unrelated_slices_without_a_common_breach() -> None:
    lattice = Lattice({"platform": ["android", "ios", "web"], "region": ["eu", "na", "apac"]})
    lattice.deviate({"platform": "web"}, 0.25)
    lattice.deviate({"region": "apac", "platform": "android"}, 0.9)
    assert lattice.explain() == ["platform=web", "platform=android,region=apac"]


def test_uniform_shift_everywhere_is_the_root() -> None:
    lattice = Lattice(DIMS)
    lattice.deviate({}, 0.2)
    assert lattice.firing() == set(lattice.labels())
    assert lattice.explain() == ["*"]


def test_root_only_breach() -> None:
    # Small shifts that only add up to a breach over the whole deployment.
    lattice = Lattice(DIMS, pairs=20)  # every slice but '*' and platforms is too small
    lattice.deviate({}, 0.12)
    assert lattice.firing() == {"*", "tier=free", "tier=premium"}
    assert lattice.explain() == ["*"]


def test_small_complement_keeps_the_parent() -> None:
    lattice = Lattice(DIMS)
    lattice.deviate({"platform": "android", "tier": "free"}, 0.25)
    lattice.deviate({"platform": "android", "tier": "premium"}, 0.0, pairs=10)
    assert lattice.firing() == {"platform=android", "platform=android,tier=free"}
    # android minus android/free is too small to call healthy: android stays the answer.
    assert lattice.explain() == ["platform=android"]
    # With enough premium traffic to judge, the leaf is the answer.
    lattice.deviate({"platform": "android", "tier": "premium"}, 0.0, pairs=100)
    assert lattice.explain() == ["platform=android,tier=free"]


def test_firing_labels_without_data_are_ignored() -> None:
    lattice = Lattice(DIMS)
    lattice.deviate({"platform": "android", "tier": "free"}, 0.3)
    labels = lattice.labels()
    firing = lattice.firing() | {"platform=unknown"}
    assert explain(labels, firing, lattice.rest) == ["platform=android,tier=free"]


dims_strategy = st.dictionaries(
    st.sampled_from(["platform", "region", "tier"]),
    st.integers(2, 3).map(lambda k: [f"v{i}" for i in range(k)]),
    min_size=1,
)


@settings(max_examples=100)
@given(dims_strategy, st.data())
def test_a_deviation_confined_to_one_slice_is_named_there(
    dims: dict[str, list[str]], data: st.DataObject
) -> None:
    fixed = data.draw(st.lists(st.sampled_from(sorted(dims)), unique=True))
    target = {d: data.draw(st.sampled_from(dims[d])) for d in fixed}
    lattice = Lattice(dims)
    lattice.deviate(target, 1.0)
    assert lattice.explain() == [Lattice.label(target)]


@pytest.mark.parametrize("callback_result", ["clean", "elevated", "unknown"])
def test_only_firing_slices_are_named(callback_result: Rest) -> None:
    lattice = Lattice(DIMS)
    lattice.deviate({"platform": "web"}, 0.5)
    firing = lattice.firing()
    result = explain(lattice.labels(), firing, lambda parent, children: callback_result)
    assert result
    assert set(result) <= firing
    # No explanation is an ancestor of another.
    parsed = [set(Lattice.parse(label).items()) for label in result]
    assert not any(a < b for a in parsed for b in parsed)
