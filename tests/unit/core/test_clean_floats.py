"""Evidence numbers, a column at a time: exactly what rounding each value alone gives."""

import math
import struct

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamguard.core.verdict import clean_float, clean_floats

values = st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=60)


@given(values, st.integers(0, 12))
def test_a_column_is_cleaned_as_each_value_alone(column: list[float], digits: int) -> None:
    got = clean_floats(np.array(column, dtype=np.float64), digits)
    want = [clean_float(v, digits) for v in column]
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        if b is None:
            assert a is None
        else:  # bit for bit (== would take -0.0 for 0.0)
            assert type(a) is float
            assert struct.pack("<d", a) == struct.pack("<d", b)


def test_nan_and_infinities_become_null_and_ints_floats() -> None:
    assert clean_floats([math.nan, math.inf, -math.inf, 3]) == [None, None, None, 3.0]
    assert clean_floats(np.arange(3)) == [0.0, 1.0, 2.0]
    assert clean_floats([]) == []
