"""Errors of the core package (:class:`~streamguard.core.stage2.PartialError` is stage 2's)."""

from streamguard.exceptions import StreamguardError

__all__ = ["AccountingError"]


class AccountingError(StreamguardError):
    """Accounting messages ``first``..``last`` of a predictions partition raised.

    Raised from the original exception (``__cause__``), by :meth:`Stage1.feed` and
    :meth:`Stage1.cut`: they know which messages were being accounted, the worker does not when
    a run is cut at a flush. The worker records them, stamped with the message at ``last``
    (:mod:`streamguard.core.quarantine`), before it stops.
    """

    def __init__(
        self,
        partition: int,
        first: int,
        last: int,
        cause: BaseException,
        value: bytes | None = None,
    ) -> None:
        what = f"offset {first}" if first == last else f"offsets {first}-{last}"
        super().__init__(
            f"accounting predictions partition {partition} {what} raised "
            f"{type(cause).__name__}: {cause}"
        )
        self.partition = partition
        self.first = first
        self.last = last
        self.error = f"{type(cause).__name__}: {cause}"
        self.value = value  # the bytes of the message at ``last``, when stage 1 held them
