"""Join outcomes (clicks, conversions, labels) to the predictions that were served.

Every served prediction (primary or canary) opens an *exposure* for its request. Outcome
events for the request add their value to it. An exposure *matures* when the partition's
event-time watermark passes its time plus the join window (or it is evicted, oldest first,
when the buffer is full). The caller then counts it once, with its accumulated value (0 when no
outcome came), for the arm and slice that served it. Outcomes for unknown or already matured
requests are counted as unmatched, never dropped silently.

Like pairing, maturation depends only on the partition's own order of events, so replay and
any number of workers see the same matured exposures.

Examples
--------
>>> join = OutcomeJoin(window_s=60.0, max_pending=100)
>>> join.expose(["r1", "r2"], [0, 2], ["v1", "v2"], [0, 0], [10.0, 11.0])
>>> join.outcome(["r1", "r1", "r9"], [1.0, 1.0, 1.0])
1
>>> [(e.request_id, e.value) for e in join.mature(watermark=100.0)]
[('r1', 2.0), ('r2', 0.0)]
"""

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from itertools import compress, repeat
from operator import not_
from typing import Any

import numpy as np

__all__ = ["Exposure", "OutcomeJoin"]


@dataclass(slots=True)
class Exposure:
    """A served prediction waiting for its outcomes."""

    request_id: str
    role: int
    version: str  # the arm's version key (model version, with @allocation for canaries)
    combo: int  # slice combination id
    ts: float
    value: float
    seq: int


class OutcomeJoin:
    """Bounded buffer of exposures keyed by request id, matured in event time."""

    def __init__(self, window_s: float, max_pending: int) -> None:
        self.window_s = window_s
        self.max_pending = max_pending
        self._open: dict[str, Exposure] = {}
        self._by_time: list[tuple[float, int, str]] = []
        self._seq = 0
        self.evicted = 0  # removed because the buffer was full, not because time ran out

    def __len__(self) -> int:
        return len(self._open)

    def expose(
        self,
        request_ids: list[str],
        roles: list[int],
        versions: list[str],
        combos: list[int],
        ts: list[float],
    ) -> None:
        """Open an exposure per served prediction; a request already open keeps its first."""
        opened = self._open
        if len(set(request_ids)) != len(request_ids):  # a request twice: the first one counts
            for columns in zip(request_ids, roles, versions, combos, ts, strict=True):
                if columns[0] not in opened:
                    self._open_each([columns])
            return
        keep = list(map(not_, map(opened.__contains__, request_ids)))
        self._open_each(
            zip(
                *(compress(c, keep) for c in (request_ids, roles, versions, combos, ts)),
                strict=True,
            )
        )

    def _open_each(self, rows: Iterable[tuple[str, int, str, int, float]]) -> None:
        """Open exposures for new requests ``(request_id, role, version, combo, ts)``."""
        rows = list(rows)
        if not rows:
            return
        ids, roles, versions, combos, times = zip(*rows, strict=True)
        seqs = range(self._seq + 1, self._seq + 1 + len(ids))
        self._seq += len(ids)
        exposures = map(Exposure, ids, roles, versions, combos, times, repeat(0.0), seqs)
        self._open.update(zip(ids, exposures, strict=True))
        heap = self._by_time
        deque(map(partial(heapq.heappush, heap), zip(times, seqs, ids, strict=True)), maxlen=0)

    def outcome(self, request_ids: list[str], values: list[float]) -> int:
        """Add outcome values to their open exposures; return how many matched none."""
        unmatched = 0
        opened = self._open
        for request_id, value in zip(request_ids, values, strict=True):
            exposure = opened.get(request_id)
            if exposure is None:
                unmatched += 1
            else:
                exposure.value += value
        return unmatched

    def snapshot(self) -> dict[str, Any]:
        """Open exposures (columns, in arrival order) and the sequence counter."""
        opened = list(self._open.values())
        return {
            "seq": self._seq,
            "request_id": [e.request_id for e in opened],
            "role": np.array([e.role for e in opened], dtype=np.int8),
            "version": [e.version for e in opened],
            "combo": np.array([e.combo for e in opened], dtype=np.int64),
            "ts": np.array([e.ts for e in opened], dtype=np.float64),
            "value": np.array([e.value for e in opened], dtype=np.float64),
            "exposure_seq": np.array([e.seq for e in opened], dtype=np.int64),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Take the exposures of :meth:`snapshot`; maturation order is as before."""
        self._seq = int(snapshot["seq"])
        self._open = {}
        columns = zip(
            snapshot["request_id"],
            snapshot["role"].tolist(),
            snapshot["version"],
            snapshot["combo"].tolist(),
            snapshot["ts"].tolist(),
            snapshot["value"].tolist(),
            snapshot["exposure_seq"].tolist(),
            strict=True,
        )
        for request_id, role, version, combo, ts, value, seq in columns:
            self._open[request_id] = Exposure(request_id, role, version, combo, ts, value, seq)
        self._by_time = [(e.ts, e.seq, r) for r, e in self._open.items()]
        heapq.heapify(self._by_time)

    def mature(self, watermark: float) -> list[Exposure]:
        """Remove and return exposures older than ``watermark - window`` and any beyond capacity."""
        out: list[Exposure] = []
        heap, opened = self._by_time, self._open
        limit = watermark - self.window_s
        while heap and (heap[0][0] < limit or len(opened) > self.max_pending):
            _, seq, request_id = heapq.heappop(heap)
            exposure = opened.get(request_id)
            if exposure is not None and exposure.seq == seq:
                if exposure.ts >= limit:
                    self.evicted += 1
                del opened[request_id]
                out.append(exposure)
        return out
