"""Give freed heap memory back to the operating system (glibc's ``malloc_trim``).

A worker's working set swings: decoding a backlog or building a snapshot allocates and frees
hundreds of MB, and glibc keeps freed chunks inside the heap, so the resident size stays at
the peak. In-process, 1,000 slices after 66,000 events: 281 MB resident, 177 MB after one
``malloc_trim(0)``. The worker trims at most every ``interval_s``, after its snapshots.
Elsewhere (musl, macOS) this is a no-op.

Examples
--------
>>> trimmer = HeapTrimmer(interval_s=0.0)
>>> trimmer.maybe_trim(now=1.0) in (True, False)  # False where there is no malloc_trim
True
"""

import ctypes
import ctypes.util
import time
from collections.abc import Callable

__all__ = ["HeapTrimmer"]


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Calls ``malloc_trim(0)`` at most once per ``interval_s`` seconds (monotonic clock)."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._trim = _malloc_trim()
        self._last = -float("inf")
        self.trims = 0

    @property
    def available(self) -> bool:
        """Whether this C library has ``malloc_trim``."""
        return self._trim is not None

    def maybe_trim(self, now: float | None = None) -> bool:
        """Trim if the interval has passed; True when it trimmed."""
        now = time.monotonic() if now is None else now
        if self._trim is None or now - self._last < self.interval_s:
            return False
        self._last = now
        self._trim(0)
        self.trims += 1
        return True
