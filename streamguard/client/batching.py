"""The emitter's buffers: one per partition, an open batch being filled and sealed ones waiting.

A batch leaves as one envelope ``{"schema_version": 1, "events": [...]}`` whose bytes are the
events' own serialized bytes between :data:`ENVELOPE_PREFIX` and :data:`ENVELOPE_SUFFIX`, so
its size is known exactly while it fills (:class:`~streamguard.client.Emitter`).
"""

import asyncio
from collections import deque
from dataclasses import dataclass, field

__all__ = ["ENVELOPE_OVERHEAD", "ENVELOPE_PREFIX", "ENVELOPE_SUFFIX", "Batch", "PartitionBuffer"]

ENVELOPE_PREFIX = b'{"schema_version":1,"events":['
ENVELOPE_SUFFIX = b"]}"
#: Bytes an envelope adds around its events (the commas between events come on top).
ENVELOPE_OVERHEAD = len(ENVELOPE_PREFIX) + len(ENVELOPE_SUFFIX)


@dataclass(slots=True)
class Batch:
    """Events bound for one message (envelope mode) or one producer hand-off (single mode)."""

    events: list[tuple[bytes, bytes]]  # (key, serialized event)


@dataclass(slots=True)
class PartitionBuffer:
    """Buffer of one partition: an open batch being filled and sealed batches waiting to go."""

    index: int
    wake: asyncio.Event
    open: list[tuple[bytes, bytes]] = field(default_factory=list)
    open_bytes: int = 0  # events plus the commas between them, without ENVELOPE_OVERHEAD
    opened_at: float = 0.0
    sealed: deque[Batch] = field(default_factory=deque)
    accepted: int = 0  # events ever put in this buffer
    finished: int = 0  # events ever sent or dropped; flush() waits on this catching up

    def seal(self) -> None:
        if self.open:
            self.sealed.append(Batch(self.open))
            self.open, self.open_bytes = [], 0
            self.wake.set()
