"""A stream's buffer bounded in bytes as well as in messages.

Faust buffers up to ``stream_buffer_maxsize`` (4096) fetched messages per stream and pauses
a partition's fetching once the buffer is 80 % full, resuming at 40 %. That bound counts
messages, whatever their size: 4096 one-event messages of ~300 B are ~1 MB, 4096 batch
envelopes of ~500 events (~60 KB each as columns, ~140 KB as rows) are 250-570 MB. Reading a
backlog of 2.4M events in such envelopes, one worker's RSS peaked at 399 MB (columns) and 378
MB (rows) with 18 slices, against 251 MB with a 256-message buffer at the same rate
(2026-11-25, ``STREAM_BUFFER_MAXSIZE``): the envelopes waiting in the buffer were a third of
the worker's memory and bought no throughput.

:class:`BoundedBuffer` applies the same high and low marks to the bytes of the buffered
messages' values as well: fetching pauses when either the count or the bytes pass the high
mark, and resumes only when both are under the low one. ``max_bytes`` comes from
``STREAMGUARD_STREAM_BUFFER_MB`` (:attr:`streamguard.settings.Settings.stream_buffer_mb`,
64 MB). Reading the same backlogs with 64 MB, the peak was 285-291 MB (columns) and 272 MB
(rows) at the same rate (columns 205-207k events/s against 205-224k); 32 MB gave 251-264
MB but columns at 173-175k events/s: once paused, a partition refills ~16 envelopes per
fetch (1 MB), and a buffer low mark of 13 MB was drained before fetching caught up.
"""

from collections import deque
from collections.abc import Callable
from typing import Any

from mode.utils.queues import FlowControlEvent, ThrowableQueue

__all__ = ["BoundedBuffer", "size_of"]


def size_of(item: Any) -> int:
    """Bytes of a buffered event's message value (0 for anything else)."""
    message = getattr(item, "message", None)
    value = getattr(message, "value", None)
    return len(value) if isinstance(value, bytes | bytearray | memoryview) else 0


class BoundedBuffer(ThrowableQueue[Any]):
    """Faust's stream buffer (``ThrowableQueue``) with a second bound, in bytes.

    Sizes are taken when an item is put and returned when it is taken, so later changes to
    the item (the worker drops a message's value once parsed) do not unbalance the count.
    """

    def __init__(
        self,
        maxsize: int = 0,
        *,
        max_bytes: int,
        flow_control: FlowControlEvent,
        clear_on_resume: bool = False,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._sizes: deque[int] = deque()
        self.bytes = 0
        self.max_bytes = max_bytes
        # The same ratios as Faust's count marks (mode.utils.queues.FlowControlQueue).
        self.high_bytes = max(1, int(max_bytes / self.pressure_high_ratio))
        self.low_bytes = int(max_bytes * self.pressure_drop_ratio)
        super().__init__(maxsize, flow_control=flow_control, clear_on_resume=clear_on_resume)

    # asyncio.Queue's own hooks: every put and get passes through them.
    def _put(self, item: Any) -> None:
        size = size_of(item)
        self._sizes.append(size)
        self.bytes += size
        super()._put(item)

    def _get(self) -> Any:
        item = super()._get()
        self.bytes -= self._sizes.popleft()
        return item

    def clear(self) -> None:
        super().clear()
        self._sizes.clear()
        self.bytes = 0

    def in_pressure_high_state(self, callback: Callable[[], None]) -> bool:
        """Register ``callback`` (a partition's resume) when the count or the bytes are high."""
        pending = self._pending_pressure_drop_callbacks
        if callback in pending:
            return False
        if self.qsize() < self.pressure_high_size and self.bytes < self.high_bytes:
            return False
        pending.add(callback)
        self.on_pressure_high()
        return True

    def maybe_endorse_pressure_drop(self) -> None:
        """Resume one paused partition once both the count and the bytes are low (all of
        them once the buffer is empty), as Faust does for the count alone."""
        pending = self._pending_pressure_drop_callbacks
        if not pending:
            return
        size = self.qsize()
        if not size:
            for resume in pending:
                resume()
            pending.clear()
            self.on_pressure_drop()
        elif size <= self.pressure_drop_size and self.bytes <= self.low_bytes:
            pending.pop()()
            self.on_pressure_drop()
