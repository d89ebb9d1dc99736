"""Join outcomes (clicks, conversions, labels) to the predictions that were served.

Every served prediction (primary or canary) opens an *exposure* for its request. Outcome
events for the request add their value to it. An exposure *matures* when the partition's
event-time watermark passes its time plus the join window (or it is evicted, oldest first,
when the buffer is full). The caller then counts it once, with its accumulated value (0 when no
outcome came), for the arm and slice that served it. Outcomes for unknown or already matured
requests are counted as unmatched, never dropped silently.

Like pairing, maturation depends only on the partition's own order of events, so replay and
any number of workers see the same matured exposures.

Exposures are held in columns, one chunk per :meth:`OutcomeJoin.expose` call, with a dict from
request id to sequence number for the outcomes' lookups: at thousands of served predictions per
message, an object and a heap entry per exposure cost more than the rest of stage 1.

Examples
--------
>>> join = OutcomeJoin(window_s=60.0, max_pending=100)
>>> join.expose(["r1", "r2"], [0, 2], ["v1", "v2"], [0, 0], [10.0, 11.0])
>>> join.outcome(["r1", "r1", "r9"], [1.0, 1.0, 1.0])
1
>>> matured = join.mature(watermark=100.0)
>>> list(zip(matured.request_id, matured.value.tolist()))
[('r1', 2.0), ('r2', 0.0)]
"""

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Matured", "OutcomeJoin"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
Bool = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Matured:
    """Exposures whose join window closed, in (time, arrival) order, as columns.

    Versions are held as codes into ``names``, and request ids as the chunks' rows they came
    from: stage 1 reads neither per exposure, so neither is built unless asked for.
    """

    role: I8
    codes: npt.NDArray[np.int32]  # the arm's version key, as a code into ``names``
    names: list[str]  # version keys (model version, with @allocation for canaries)
    combo: I64  # slice combination ids
    ts: F64
    value: F64  # summed outcome values (0 when none came)
    _ids: list[tuple[list[str], list[int]]] = field(default_factory=list)
    _order: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, np.intp))

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def request_id(self) -> list[str]:
        """The exposures' request ids (for tests and diagnostics)."""
        ids = list(chain.from_iterable(map(owner.__getitem__, rows) for owner, rows in self._ids))
        return list(map(ids.__getitem__, self._order.tolist()))

    @property
    def version(self) -> list[str]:
        """The exposures' version keys."""
        return list(map(self.names.__getitem__, self.codes.tolist()))

    def groups(self) -> Iterator[tuple[int, str, I64]]:
        """``(role, version, positions)`` per arm, sorted by role and version."""
        keys = self.role.astype(np.int64) * len(self.names) + self.codes
        arms = [divmod(int(k), len(self.names)) for k in np.unique(keys).tolist()]
        for role, code in sorted(arms, key=lambda arm: (arm[0], self.names[arm[1]])):
            yield role, self.names[code], np.flatnonzero(keys == role * len(self.names) + code)


@dataclass(slots=True)
class _Chunk:
    """The exposures one call opened; rows die as they mature."""

    first_seq: int  # sequence number of row 0; rows are consecutive
    request_id: list[str]
    role: I8
    version: npt.NDArray[np.int32]  # codes into OutcomeJoin._version_names
    combo: I64
    ts: F64
    value: F64
    alive: Bool
    n_alive: int
    min_ts: float  # of the rows alive: a chunk with nothing old enough is skipped whole

    def refresh(self) -> None:
        self.n_alive = int(self.alive.sum())
        self.min_ts = float(self.ts[self.alive].min()) if self.n_alive else np.inf


class OutcomeJoin:
    """Bounded buffer of exposures keyed by request id, matured in event time."""

    def __init__(self, window_s: float, max_pending: int) -> None:
        self.window_s = window_s
        self.max_pending = max_pending
        self._index: dict[str, int] = {}  # request id -> sequence number of its exposure
        self._chunks: list[_Chunk] = []  # by first_seq
        self._firsts: list[int] = []  # first_seq of each chunk, for bisection
        self._version_names: list[str] = []
        self._version_codes: dict[str, int] = {}
        self._seq = 0
        self._oldest = np.inf  # smallest min_ts of the chunks: mature() returns at once below it
        self.evicted = 0  # removed because the buffer was full, not because time ran out

    def __len__(self) -> int:
        return len(self._index)

    def expose(
        self,
        request_ids: list[str],
        roles: Sequence[int] | I8,
        versions: Sequence[str],
        combos: Sequence[int] | I64,
        ts: Sequence[float] | F64,
    ) -> None:
        """Open an exposure per served prediction; a request already open keeps its first."""
        n = len(request_ids)
        if not n:
            return
        first_seq = self._seq + 1
        # One dict pass that both looks up and inserts: setdefault keeps a request's first
        # exposure (open before, or earlier in the batch) and hands back its sequence number.
        seqs = np.fromiter(
            map(self._index.setdefault, request_ids, range(first_seq, first_seq + n)), np.int64, n
        )
        alive = seqs == np.arange(first_seq, first_seq + n)
        n_alive = int(alive.sum())
        if not n_alive:
            return
        self._seq += n  # rows that lost to an open exposure stay in the chunk, dead
        names = set(versions)
        if len(names) == 1:
            codes = np.full(n, self._code(next(iter(names))), dtype=np.int32)
        else:
            lookup = {name: self._code(name) for name in sorted(names)}
            codes = np.fromiter(map(lookup.__getitem__, versions), np.int32, n)
        ts_ = np.array(ts, dtype=np.float64)
        chunk = _Chunk(
            first_seq=first_seq,
            request_id=request_ids,
            role=np.array(roles, dtype=np.int8),
            version=codes,
            combo=np.array(combos, dtype=np.int64),
            ts=ts_,
            value=np.zeros(n, dtype=np.float64),
            alive=alive,
            n_alive=n_alive,
            min_ts=float(ts_.min() if n_alive == n else ts_[alive].min()),
        )
        self._chunks.append(chunk)
        self._firsts.append(first_seq)
        self._oldest = min(self._oldest, chunk.min_ts)

    def _code(self, version: str) -> int:
        code = self._version_codes.get(version)
        if code is None:
            code = self._version_codes[version] = len(self._version_names)
            self._version_names.append(version)
        return code

    def opened_at(self, request_ids: list[str]) -> F64:
        """Event time of each request's open exposure (NaN for requests with none)."""
        seqs = self._seqs(request_ids)
        out = np.full(len(request_ids), np.nan)
        open_ = np.flatnonzero(seqs >= 0)
        for chunk, pick in self._owners(seqs[open_]):
            out[open_[pick]] = chunk.ts[seqs[open_[pick]] - chunk.first_seq]
        return out

    def _seqs(self, request_ids: list[str]) -> I64:
        """Sequence number of each request's open exposure (-1 for requests with none)."""
        return np.fromiter(
            (-1 if s is None else s for s in map(self._index.get, request_ids)),
            np.int64,
            len(request_ids),
        )

    def _owners(self, seqs: I64) -> Iterator[tuple["_Chunk", npt.NDArray[np.bool_]]]:
        """``(chunk, mask of seqs in it)`` for each chunk holding some of ``seqs``."""
        if not len(seqs):
            return
        where = np.searchsorted(np.asarray(self._firsts), seqs, side="right") - 1
        for c in np.unique(where).tolist():
            yield self._chunks[c], where == c

    def outcome(self, request_ids: list[str], values: Sequence[float]) -> int:
        """Add outcome values to their open exposures; return how many matched none."""
        seqs = self._seqs(request_ids)
        matched = seqs >= 0
        if not matched.any():
            return len(request_ids)
        seqs, added = seqs[matched], np.asarray(values, dtype=np.float64)[matched]
        for chunk, pick in self._owners(seqs):
            # In arrival order, one by one: the same sums, to the bit, on every replay.
            np.add.at(chunk.value, seqs[pick] - chunk.first_seq, added[pick])
        return int((~matched).sum())

    def mature(self, watermark: float) -> Matured:
        """Remove and return exposures older than ``watermark - window`` and any beyond capacity."""
        limit = watermark - self.window_s
        if limit <= self._oldest and len(self._index) <= self.max_pending:
            return _EMPTY  # most calls: nothing old enough, and without a scan of the chunks
        taken: list[tuple[_Chunk, I64]] = []
        for chunk in self._chunks:
            if chunk.min_ts < limit:
                taken.append((chunk, np.flatnonzero(chunk.alive & (chunk.ts < limit))))
        for chunk, rows in taken:
            chunk.alive[rows] = False
        excess = len(self._index) - sum(len(rows) for _, rows in taken) - self.max_pending
        if excess > 0:  # the oldest of the rest, by (time, arrival)
            rest = [(c, np.flatnonzero(c.alive)) for c in self._chunks if c.n_alive]
            ts = np.concatenate([c.ts[r] for c, r in rest])
            seq = np.concatenate([c.first_seq + r for c, r in rest])
            cut = np.sort(np.lexsort((seq, ts))[:excess])
            owner = np.repeat(np.arange(len(rest)), [len(r) for _, r in rest])[cut]
            offsets = np.cumsum([0] + [len(r) for _, r in rest])
            for i in np.unique(owner).tolist():
                chunk, rows = rest[i]
                evicted = rows[cut[owner == i] - offsets[i]]
                chunk.alive[evicted] = False
                taken.append((chunk, evicted))
            self.evicted += excess
        return self._remove(taken)

    def _remove(self, taken: list[tuple[_Chunk, I64]]) -> Matured:
        taken = [(c, r) for c, r in taken if len(r)]
        if not taken:
            return _EMPTY
        ts = np.concatenate([c.ts[r] for c, r in taken])
        seq = np.concatenate([c.first_seq + r for c, r in taken])
        order = np.lexsort((seq, ts))
        ids = [(c.request_id, r.tolist()) for c, r in taken]
        matured = Matured(
            role=np.concatenate([c.role[r] for c, r in taken])[order],
            codes=np.concatenate([c.version[r] for c, r in taken])[order],
            names=self._version_names,
            combo=np.concatenate([c.combo[r] for c, r in taken])[order],
            ts=ts[order],
            value=np.concatenate([c.value[r] for c, r in taken])[order],
            _ids=ids,
            _order=order,
        )
        # map, not a loop: every exposure passes here once (C-level lookups).
        for owner, rows in ids:
            deque(map(self._index.__delitem__, map(owner.__getitem__, rows)), maxlen=0)
        for chunk in {id(c): c for c, _ in taken}.values():
            chunk.refresh()
        kept = [c for c in self._chunks if c.n_alive]
        if len(kept) != len(self._chunks):
            self._chunks, self._firsts = kept, [c.first_seq for c in kept]
        self._oldest = min((c.min_ts for c in self._chunks), default=np.inf)
        return matured

    def snapshot(self) -> dict[str, Any]:
        """Open exposures (columns, in arrival order) and the sequence counter."""
        live = [(c, np.flatnonzero(c.alive)) for c in self._chunks]

        def column(name: str, dtype: type) -> npt.NDArray[Any]:
            parts = [getattr(c, name)[r] for c, r in live]
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        codes = column("version", np.int32)
        return {
            "seq": self._seq,
            "request_id": list(
                chain.from_iterable(compress(c.request_id, c.alive.tolist()) for c in self._chunks)
            ),
            "role": column("role", np.int8),
            "version": list(map(self._version_names.__getitem__, codes.tolist())),
            "combo": column("combo", np.int64),
            "ts": column("ts", np.float64),
            "value": column("value", np.float64),
            "exposure_seq": np.concatenate([c.first_seq + r for c, r in live]).astype(np.int64)
            if live
            else np.zeros(0, np.int64),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Take the exposures of :meth:`snapshot`; maturation order is as before."""
        self._seq = int(snapshot["seq"])
        self._index, self._chunks, self._firsts = {}, [], []
        self._oldest = np.inf
        seqs = np.asarray(snapshot["exposure_seq"], dtype=np.int64)
        if not len(seqs):
            return
        lookup = {name: self._code(name) for name in sorted(set(snapshot["version"]))}
        codes = np.fromiter(map(lookup.__getitem__, snapshot["version"]), np.int32, len(seqs))
        # Sequence numbers have gaps where exposures matured: one chunk per consecutive run.
        breaks = np.flatnonzero(np.diff(seqs) != 1) + 1
        for part in np.split(np.arange(len(seqs)), breaks):
            lo, hi = int(part[0]), int(part[-1]) + 1
            chunk = _Chunk(
                first_seq=int(seqs[lo]),
                request_id=list(snapshot["request_id"][lo:hi]),
                role=np.asarray(snapshot["role"][lo:hi], dtype=np.int8),
                version=codes[lo:hi],
                combo=np.asarray(snapshot["combo"][lo:hi], dtype=np.int64),
                ts=np.asarray(snapshot["ts"][lo:hi], dtype=np.float64),
                value=np.asarray(snapshot["value"][lo:hi], dtype=np.float64).copy(),
                alive=np.ones(hi - lo, dtype=np.bool_),
                n_alive=hi - lo,
                min_ts=0.0,
            )
            chunk.refresh()
            self._chunks.append(chunk)
            self._firsts.append(chunk.first_seq)
            self._oldest = min(self._oldest, chunk.min_ts)
            seq_range = range(chunk.first_seq, chunk.first_seq + (hi - lo))
            self._index.update(zip(chunk.request_id, seq_range, strict=True))


_EMPTY = Matured(
    np.zeros(0, np.int8), np.zeros(0, np.int32), [], np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
)
