"""The shadow guard's complements, asked in bulk, answer as one at a time.

``Look._rests`` judges many "slice minus these sub-slices" questions in one array pass. The
reference here is the judgement written out for a single question, on the row-by-row sums
(``sum_rows`` and ``subtract_fields``), as the guard computed it before it asked in bulk.
"""

import math
from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.core.slices import SliceCoder, label_within
from streamguard.core.summary import Registry, Table, subtract_fields, sum_rows
from streamguard.guards.explain import Rest
from streamguard.guards.shadow_look import (
    _FLIP,
    _MAD,
    CLEAN_FRACTION,
    RESOLVE_FRACTION,
    SHORT_REST_FRACTION,
    Look,
    shadow_statistics,
)
from streamguard.policy import SHADOW_STATISTICS, Policy, ShadowPolicy
from tests.unit.core._pairs import MEASURES, SLICES, slice_dicts

POLICY = replace(
    Policy().defaults,
    slices=SLICES,
    shadow=replace(ShadowPolicy(score_bins=10, decision_threshold=0.5), min_pairs=60),
)


def one_rest(look: Look, parent: str, children: list[str]) -> Rest:
    """The single-question judgement (the reference)."""
    p, shadow = look.index[parent], look.policy.shadow
    row = int(look.rows[p])  # the arrays may keep their own row order (Look.rows)
    remainder = subtract_fields(
        look.measures.fields,
        {k: v[row : row + 1] for k, v in look.arrays.items()},
        sum_rows(
            look.measures.fields, look.arrays, [int(look.rows[look.index[c]]) for c in children]
        ),
    )
    pairs = int(remainder["pairs"][0])
    stats = shadow_statistics(remainder, look.measures, shadow.psi_groups)
    if pairs < shadow.min_pairs:
        floor = max(1, int(RESOLVE_FRACTION * shadow.min_pairs))
        if look.name != "recent" or pairs < floor:
            return "unknown"
        level = max(
            float(stats["mean_abs_dev"][0]) / look.bands[p, _MAD, 0],
            float(stats["flip_rate"][0]) / look.bands[p, _FLIP, 0],
        )
        return "clean" if level < SHORT_REST_FRACTION else "elevated"
    ratios = [
        float(stats[name][0]) / look.bands[p, j, 0] for j, name in enumerate(SHADOW_STATISTICS)
    ]
    worst = max((r for r in ratios if math.isfinite(r)), default=0.0)
    return "clean" if worst < CLEAN_FRACTION else "elevated"


def look_at(slices: list[dict[str, str]], seed: int, spikes: float, name: str) -> Look:
    """Shadow = primary, except a ``spikes`` share of pairs 0.3 apart and a shift on Android.

    Sparse spikes keep the two means low while the p95 deviation breaches: the two ways of
    judging a rest (all statistics, or the short look's two means) then disagree.
    """
    rng = np.random.default_rng(seed)
    primary = rng.uniform(0.0, 1.0, len(slices))
    shadow = primary + np.where(rng.uniform(size=len(slices)) < spikes, 0.3, 0.0)
    android = np.array([s.get("platform") == "android" for s in slices])
    shadow = np.where(android, shadow + 0.2, shadow)
    coder = SliceCoder(SLICES)
    registry = Registry()
    table = Table(MEASURES.fields)
    rows = coder.rows(coder.encode(slices))
    table.add(
        registry.rows_for(rows.labels),
        MEASURES.contributions(rows.index, len(rows.labels), primary, shadow),
    )
    summed = (list(registry.labels), table.view(len(registry)))
    look = Look.of(name, 1, summed, POLICY, MEASURES)
    assert look is not None
    return look


@settings(max_examples=60, deadline=None)
@given(
    st.lists(slice_dicts, min_size=150, max_size=400),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.0, 0.08]),
    st.sampled_from(["horizon", "recent"]),
    st.data(),
)
def test_rests_in_bulk_answer_as_one_at_a_time(slices, seed, spikes, name, data) -> None:
    look = look_at(slices, seed, spikes, name)
    labels = look.labels
    questions = []
    for parent in labels:
        inside = [c for c in labels if c != parent and label_within(c, parent)]
        if inside:
            picked = data.draw(st.sets(st.sampled_from(inside), min_size=1))
            questions.append((parent, sorted(picked)))
    if not questions:
        return
    assert look._rests(questions) == [one_rest(look, p, c) for p, c in questions]
