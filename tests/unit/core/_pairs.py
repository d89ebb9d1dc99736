"""Random batches of pairs with slices, shared by the summary and measures tests."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamguard.core.measures import PairMeasures
from streamguard.policy import ShadowPolicy, SlicePolicy

SLICES = SlicePolicy(dimensions=("platform", "tier"), max_level=1, include_full=True)
MEASURES = PairMeasures.from_policy(ShadowPolicy(score_bins=10, decision_threshold=0.5))

slice_dicts = st.fixed_dictionaries(
    {},
    optional={
        "platform": st.sampled_from(["ios", "android", "web"]),
        "tier": st.sampled_from(["free", "premium"]),
    },
)
# Mostly in the declared range [0, 1], some outside, some on bin edges and on the threshold.
scores = st.one_of(
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, -0.25, 1.5]),
    st.floats(-1.0, 2.0),
)


@st.composite
def pair_batches(
    draw: st.DrawFn, min_size: int = 0, max_size: int = 40
) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray]:
    n = draw(st.integers(min_size, max_size))
    slices = draw(st.lists(slice_dicts, min_size=n, max_size=n))
    primary = draw(hnp.arrays(np.float64, n, elements=scores))
    shadow = draw(hnp.arrays(np.float64, n, elements=scores))
    return slices, primary, shadow
