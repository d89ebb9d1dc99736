"""Item hashing shared by the sketches, and their common checks.

Hashing never uses Python's per-process salted ``hash()``: :func:`hash64` is 64-bit FNV-1a of
the UTF-8 bytes followed by the MurmurHash3 ``fmix64`` finaliser, so every process (and every
language that implements the same two published functions) maps an item to the same counters.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["hash64"]

U64 = npt.NDArray[np.uint64]
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
FMIX_C1 = np.uint64(0xFF51AFD7ED558CCD)
FMIX_C2 = np.uint64(0xC4CEB9FE1A85EC53)
GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1
HASH_NAME = "fnv1a64+fmix64"
VERSION = 1


def fmix64(h: U64) -> U64:
    """MurmurHash3's 64-bit finaliser, elementwise on a ``uint64`` array (wrapping)."""
    h = h ^ (h >> np.uint64(33))
    h = h * FMIX_C1
    h = h ^ (h >> np.uint64(33))
    h = h * FMIX_C2
    return h ^ (h >> np.uint64(33))


def hash64(items: Sequence[str]) -> U64:
    """Deterministic 64-bit hash of each string: ``fmix64(FNV-1a-64(utf8(item)))``.

    FNV-1a (Fowler, Noll, Vo; offset basis ``0xcbf29ce484222325``, prime
    ``0x100000001b3``) runs over the UTF-8 bytes: for each byte ``h = (h XOR byte) · prime``
    modulo ``2^64``. FNV-1a alone mixes the high bits poorly for short keys, so the result
    goes through MurmurHash3's ``fmix64`` (Appleby): ``h ^= h >> 33; h *= 0xff51afd7ed558ccd;
    h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33``. Nothing depends on
    ``PYTHONHASHSEED`` or the platform.

    Vectorised: the bytes of the whole batch are concatenated once and the FNV loop runs per
    byte position over the strings that are still that long, so the cost is proportional to
    the total number of bytes, not to ``len(items) × longest item``.

    Parameters
    ----------
    items : sequence of str
        Strings to hash.

    Returns
    -------
    numpy.ndarray
        ``uint64`` hashes, one per item.

    Examples
    --------
    >>> [hex(int(h)) for h in hash64(["", "a"])]
    ['0xefd01f60ba992926', '0x82a2a958a9bece5b']
    """
    n = len(items)
    h = np.full(n, FNV_OFFSET, dtype=np.uint64)
    if n == 0:
        return h
    joined = "".join(items)
    if joined.isascii():
        # One C-level encode; for ASCII, characters are the UTF-8 bytes.
        lengths = np.fromiter(map(len, items), dtype=np.intp, count=n)
        flat = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    else:
        encoded = [item.encode("utf-8") for item in items]
        lengths = np.fromiter(map(len, encoded), dtype=np.intp, count=n)
        flat = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    starts = np.zeros(n, dtype=np.intp)
    np.cumsum(lengths[:-1], out=starts[1:])
    # Longest first, so the strings still active at byte position j are a prefix.
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    sorted_starts = starts[order]
    longest = int(sorted_lengths[0])
    active = np.searchsorted(-sorted_lengths, -np.arange(longest), side="left")
    hs = h  # same buffer, in the sorted order
    for j in range(longest):
        a = int(active[j])
        part = hs[:a]
        part ^= flat[sorted_starts[:a] + j]
        part *= FNV_PRIME
    out = np.empty(n, dtype=np.uint64)
    out[order] = hs
    return fmix64(out)


def check_count(count: int) -> int:
    c = operator.index(count)
    if c < 0:
        raise ValueError(f"counts must be non-negative integers, got {count}")
    return c


def aggregate(items: Sequence[str], counts: Sequence[int] | None) -> dict[str, int]:
    """Exact per-item totals of one batch, without zero entries."""
    if counts is None:
        return Counter(items)
    if len(counts) != len(items):
        raise ValueError(f"items and counts differ in length: {len(items)} vs {len(counts)}")
    batch: dict[str, int] = {}
    for item, count in zip(items, counts, strict=True):
        c = check_count(count)
        if c:
            batch[item] = batch.get(item, 0) + c
    return batch


def check_kind(d: dict[str, Any], kind: str) -> None:
    if d.get("kind") != kind or d.get("version") != VERSION:
        raise ValueError(
            f"not a version {VERSION} {kind} dict: kind={d.get('kind')!r}, "
            f"version={d.get('version')!r}"
        )
