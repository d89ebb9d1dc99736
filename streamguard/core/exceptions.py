"""Errors of the core package (:class:`~streamguard.core.stage2.PartialError` is stage 2's)."""

from streamguard.exceptions import StreamguardError

__all__ = ["AccountingError"]


class AccountingError(StreamguardError):
    """Accounting messages ``first``..``last`` of an input partition raised.

    Raised from the original exception (``__cause__``), by :meth:`Stage1.feed` and
    :meth:`Stage1.cut` (they know which messages were being accounted, the worker does not when
    a run is cut at a flush), and by the worker for the training examples it counts. The
    worker records them, stamped with the message at ``last``
    (:mod:`streamguard.core.quarantine`), before it stops.
    """

    def __init__(
        self,
        partition: int,
        first: int,
        last: int,
        cause: BaseException,
        value: bytes | None = None,
        *,
        source: str = "predictions",
    ) -> None:
        what = f"offset {first}" if first == last else f"offsets {first}-{last}"
        super().__init__(
            f"accounting {source} partition {partition} {what} raised "
            f"{type(cause).__name__}: {cause}"
        )
        self.partition = partition
        self.first = first
        self.last = last
        self.error = f"{type(cause).__name__}: {cause}"
        self.value = value  # the bytes of the message at ``last``, when stage 1 held them
