"""Freed heap goes back to the operating system: resident memory drops after a trim."""

import gc
import os

import numpy as np
import pytest

from streamguard.faust_app.heap import HeapTrimmer
from streamguard.testing import rss_bytes


def test_trims_at_most_once_per_interval() -> None:
    trimmer = HeapTrimmer(interval_s=10.0)
    if not trimmer.available:
        pytest.fail("malloc_trim is missing: the worker's memory figures assume glibc")
    assert trimmer.maybe_trim(now=100.0)
    assert not trimmer.maybe_trim(now=105.0)
    assert trimmer.maybe_trim(now=110.0)
    assert trimmer.trims == 2


def test_a_trim_returns_freed_small_allocations() -> None:
    # Many small arrays (below glibc's mmap threshold) live in the heap; freeing every other
    # one leaves holes glibc keeps resident until trimmed.
    keep = [np.ones(4096) for _ in range(10_000)]  # ~330 MB, 32 KB each
    del keep[::2]
    gc.collect()
    before = rss_bytes(os.getpid())
    assert HeapTrimmer(interval_s=0.0).maybe_trim(now=1.0)
    after = rss_bytes(os.getpid())
    assert before - after > 100 * 2**20, (before, after)  # of ~160 MB freed
    del keep
