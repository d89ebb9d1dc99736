"""Pair the primary and shadow predictions of each request.

Halves wait in a bounded buffer. A half expires when the partition's event-time watermark
passes its time plus the TTL, or is evicted (oldest first) when the buffer is full; either way it
is returned to the caller, which counts it as unpaired. Nothing leaves the buffer silently.

Expiry depends only on the order of events within the partition, never on wall-clock time, so
replaying a partition reproduces the same pairs and the same unpaired halves.

Examples
--------
>>> import numpy as np
>>> from streamguard.contracts import PredictionBatch
>>> buf = PairingBuffer(ttl_s=30.0, max_pending=10)
>>> batch = PredictionBatch(["a", "b", "c"], ["r1", "r1", "r2"], np.array([1.0, 1.5, 2.0]),
...     ["d"] * 3, ["v1", "v2", "v1"], np.array([0, 1, 0], np.int8), np.array([0.2, 0.3, 0.9]),
...     np.full(3, np.nan), [{}, {}, {}])
>>> pairs = buf.match(batch, np.array([0, 0, 1]))
>>> len(pairs), pairs.version, len(buf)
(1, ['v2'], 1)
>>> [h.request_id for h in buf.expire(watermark=100.0)]
['r2']
"""

import heapq
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from streamguard.contracts import ROLE_PRIMARY, PredictionBatch

__all__ = ["Half", "PairingBuffer", "Pairs"]

F64 = npt.NDArray[np.float64]


class Half(NamedTuple):
    """One prediction waiting for its partner (a tuple: made in bulk by C-level ``zip``)."""

    request_id: str
    role: int
    ts: float
    score: float
    deployment: str
    model_version: str
    combo: int  # slice combination id (see SliceCoder)
    seq: int
    env: str = ""  # env_fingerprint, "" when the event has none


@dataclass(slots=True)
class Pairs:
    """Completed pairs, one entry per request.

    ``ts`` is the later of the two event times: a pair is complete when its second half
    arrives, so a slow shadow does not make the pair late. ``combo`` is the primary's slice
    combination id. ``primary_env`` and ``shadow_env`` hold the halves' ``env_fingerprint``
    ("" where absent), or are empty when no half of these pairs had one.
    """

    ts: F64
    deployment: list[str]
    version: list[str]  # the shadow's model version: the candidate
    baseline_version: list[str]  # the primary's model version
    combo: npt.NDArray[np.int64]
    primary: F64
    shadow: F64
    duplicates: int = 0  # halves whose role was already waiting for the same request
    primary_env: list[str] = field(default_factory=list)
    shadow_env: list[str] = field(default_factory=list)
    #: Position in the matched batch of the half that completed each pair (the later one).
    at: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))

    def __len__(self) -> int:
        return len(self.deployment)


class _Plan(NamedTuple):
    """How a batch pairs (see :meth:`PairingBuffer._plan`)."""

    first_of: npt.NDArray[np.intp]  # position of the first half of each pair within the batch
    second: npt.NDArray[np.intp]  # position of its second half
    single: npt.NDArray[np.bool_]  # events left to wait in the buffer
    halves: list[Half]  # waiting halves completed by the batch
    at: list[int]  # position of the event completing each of them


class PairingBuffer:
    """Bounded buffer of unpaired halves with event-time expiry."""

    def __init__(self, ttl_s: float, max_pending: int) -> None:
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._pending: dict[str, Half] = {}
        self._by_time: list[tuple[float, int, str]] = []  # heap of (ts, seq, request_id)
        self._seq = 0
        self.evicted = 0  # removed because the buffer was full, not because time ran out

    def __len__(self) -> int:
        return len(self._pending)

    def match(self, batch: PredictionBatch, combos: npt.NDArray[np.int64]) -> Pairs:
        """Pair the batch's primary and shadow events with each other and with waiting halves.

        The batch must contain only primary and shadow predictions; ``combos`` holds their
        slice combination ids.
        """
        fast = self._match_columns(batch, combos)
        if fast is not None:
            return fast
        roles = batch.role.tolist()
        first: dict[str, int] = {}
        in_batch: list[tuple[int, int]] = []  # (primary index, shadow index)
        with_waiting: list[tuple[Half, int]] = []
        duplicates = 0
        pending = self._pending
        for i, request_id in enumerate(batch.request_id):
            j = first.pop(request_id, -1)
            if j >= 0:
                if roles[j] != roles[i]:
                    in_batch.append((j, i) if roles[j] == ROLE_PRIMARY else (i, j))
                    continue
                duplicates += 1
                first[request_id] = j  # keep the first of two identical halves
                continue
            waiting = pending.get(request_id)
            if waiting is not None:
                if waiting.role != roles[i]:
                    del pending[request_id]
                    with_waiting.append((waiting, i))
                else:
                    duplicates += 1
                continue
            first[request_id] = i
        self._add(batch, combos, np.fromiter(first.values(), np.intp, len(first)))
        positions = (
            np.array([p for p, _ in in_batch], dtype=np.intp),
            np.array([s for _, s in in_batch], dtype=np.intp),
        )
        return self._assemble(batch, combos, positions, with_waiting, duplicates)

    def _plan(
        self,
        request_ids: list[str],
        roles: npt.NDArray[np.int8],
        deadlines: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
    ) -> "_Plan | None":
        """How the usual batch pairs, worked out over whole columns without changing anything.

        The usual batch has every request at most twice, as a primary and a shadow, and a
        request waiting in the buffer at most once, as its other role. Anything else
        (duplicates) gives None. With ``deadlines`` (per event: its time, and the watermark before
        its message minus the TTL), a pair whose first half would have expired before the
        second arrived gives None too.
        """
        n = len(request_ids)
        last = dict(zip(request_ids, range(n), strict=True))
        if len(last) == n:
            second = first_of = np.zeros(0, dtype=np.intp)
            single = np.ones(n, dtype=bool)
        else:
            # Every event of a request points at its last one; how many point at an event is
            # its request's count. One dict and one lookup pass, not two of each.
            last_at = np.fromiter(map(last.__getitem__, request_ids), np.intp, n)
            count = np.bincount(last_at, minlength=n)
            if (count > 2).any():
                return None  # a request three times or more
            earlier = np.flatnonzero(last_at != np.arange(n))
            partner = np.empty(n, dtype=np.intp)
            partner[last_at[earlier]] = earlier
            second = np.flatnonzero(count == 2)  # in the order of the later halves, as before
            first_of = partner[second]
            if (roles[first_of] == roles[second]).any():
                return None  # the same role twice
            single = count[last_at] == 1
        pending = self._pending
        waiting_ids = list(filter(pending.__contains__, last))
        at: list[int] = []
        halves: list[Half] = []
        if waiting_ids:
            at = sorted(map(last.__getitem__, waiting_ids))
            if not single[at].all():
                return None  # a waiting request is also completed within the batch
            halves = list(map(pending.__getitem__, map(request_ids.__getitem__, at)))
            waiting_roles = np.fromiter(map(attrgetter("role"), halves), np.int8, len(at))
            if (waiting_roles == roles[at]).any():
                return None  # the same role again
            single[at] = False
        if deadlines is not None:
            ts, limits = deadlines
            if len(second) and (ts[first_of] < limits[second]).any():
                return None
            if halves:
                waiting_ts = np.fromiter(map(attrgetter("ts"), halves), np.float64, len(at))
                if (waiting_ts < limits[at]).any():
                    return None
        return _Plan(first_of, second, single, halves, at)

    def in_order(
        self,
        request_ids: list[str],
        roles: npt.NDArray[np.int8],
        ts: npt.NDArray[np.float64],
        before: npt.NDArray[np.float64],
    ) -> bool:
        """True when matching these events at once pairs them as one message each would.

        The events are one per message, in order, and ``before`` holds the watermark before
        each one's message. One message at a time, a half expires (watermark minus TTL past its
        time) before a later partner arrives; at once it would not. Events that pair otherwise
        than in :meth:`match`'s usual batch answer False too, as does a batch that could fill
        the buffer (one message at a time evicts as soon as it is full).
        """
        if len(self._pending) + len(request_ids) > self.max_pending:
            return False
        return self._plan(request_ids, roles, (ts, before - self.ttl_s)) is not None

    def _match_columns(self, batch: PredictionBatch, combos: npt.NDArray[np.int64]) -> Pairs | None:
        """The same pairing with dict and numpy operations over whole columns (see _plan)."""
        plan = self._plan(batch.request_id, batch.role)
        if plan is None:
            return None
        pending = self._pending
        deque(map(pending.__delitem__, map(attrgetter("request_id"), plan.halves)), maxlen=0)
        roles = batch.role
        primary_first = roles[plan.first_of] == ROLE_PRIMARY
        in_batch = (
            np.where(primary_first, plan.first_of, plan.second),
            np.where(primary_first, plan.second, plan.first_of),
        )
        self._add(batch, combos, np.flatnonzero(plan.single))
        with_waiting = list(zip(plan.halves, plan.at, strict=True))
        return self._assemble(batch, combos, in_batch, with_waiting, 0)

    def _add(
        self, batch: PredictionBatch, combos: npt.NDArray[np.int64], at: npt.NDArray[np.intp]
    ) -> None:
        """Put the events at positions ``at`` (in that order) in the buffer."""
        if not len(at):
            return
        pick = at.tolist()
        request_ids = [batch.request_id[i] for i in pick]
        seqs = range(self._seq + 1, self._seq + 1 + len(pick))
        self._seq += len(pick)
        ts = batch.ts[at].tolist()
        # Every field, env included: tuple.__new__ does not fill a NamedTuple's defaults.
        envs = (
            [batch.env_fingerprint[i] for i in pick] if batch.env_fingerprint else [""] * len(pick)
        )
        halves = map(
            tuple.__new__,
            [Half] * len(pick),
            zip(
                request_ids,
                batch.role[at].tolist(),
                ts,
                batch.score[at].tolist(),
                [batch.deployment[i] for i in pick],
                [batch.model_version[i] for i in pick],
                combos[at].tolist(),
                seqs,
                envs,
                strict=True,
            ),
        )
        self._pending.update(zip(request_ids, halves, strict=True))
        deque(
            map(partial(heapq.heappush, self._by_time), zip(ts, seqs, request_ids, strict=True)),
            maxlen=0,
        )

    def _assemble(
        self,
        batch: PredictionBatch,
        combos: npt.NDArray[np.int64],
        in_batch: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]],
        with_waiting: list[tuple[Half, int]],
        duplicates: int,
    ) -> Pairs:
        """Pairs within the batch (primary and shadow positions), then with waiting halves."""
        ip, js = in_batch
        k_in = len(ip)
        n = k_in + len(with_waiting)
        ts = np.empty(n)
        primary = np.empty(n)
        shadow = np.empty(n)
        combo = np.empty(n, dtype=np.int64)
        ts[:k_in] = np.maximum(batch.ts[ip], batch.ts[js])
        primary[:k_in] = batch.score[ip]
        shadow[:k_in] = batch.score[js]
        combo[:k_in] = combos[ip]
        p_list, s_list = ip.tolist(), js.tolist()
        deployment = list(map(batch.deployment.__getitem__, p_list))
        version = list(map(batch.model_version.__getitem__, s_list))
        baseline = list(map(batch.model_version.__getitem__, p_list))
        for k, (half, i) in enumerate(with_waiting, start=k_in):  # few: across batches
            ts[k] = max(half.ts, float(batch.ts[i]))
            own = float(batch.score[i])
            if half.role == ROLE_PRIMARY:
                primary[k], shadow[k] = half.score, own
                version.append(batch.model_version[i])
                baseline.append(half.model_version)
                combo[k] = half.combo
            else:
                primary[k], shadow[k] = own, half.score
                version.append(half.model_version)
                baseline.append(batch.model_version[i])
                combo[k] = combos[i]
            deployment.append(half.deployment)
        pairs = Pairs(ts, deployment, version, baseline, combo, primary, shadow, duplicates)
        pairs.at = np.concatenate(
            [np.maximum(ip, js), np.array([i for _, i in with_waiting], dtype=np.intp)]
        ).astype(np.intp, copy=False)
        envs = batch.env_fingerprint
        if envs or any(half.env for half, _ in with_waiting):
            every = envs or [""] * len(batch)
            # The same order as the scores above: pairs within the batch, then with waiting halves.
            pairs.primary_env = [every[p] for p in p_list] + [
                half.env if half.role == ROLE_PRIMARY else every[i] for half, i in with_waiting
            ]
            pairs.shadow_env = [every[j] for j in s_list] + [
                every[i] if half.role == ROLE_PRIMARY else half.env for half, i in with_waiting
            ]
        return pairs

    def expire(self, watermark: float) -> list[Half]:
        """Remove and return halves older than ``watermark - ttl`` and any beyond capacity."""
        out: list[Half] = []
        heap, pending = self._by_time, self._pending
        limit = watermark - self.ttl_s
        while heap and (heap[0][0] < limit or len(pending) > self.max_pending):
            _, seq, request_id = heapq.heappop(heap)
            half = pending.get(request_id)
            if half is not None and half.seq == seq:
                if half.ts >= limit:
                    self.evicted += 1
                del pending[request_id]
                out.append(half)
        if len(heap) > 4 * max(len(pending), 1024):
            # Entries of halves that were paired stay in the heap; rebuild it when they dominate.
            self._by_time = [(h.ts, h.seq, r) for r, h in pending.items()]
            heapq.heapify(self._by_time)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Waiting halves (columns, in arrival order) and the sequence counter."""
        halves = list(self._pending.values())
        return {
            "seq": self._seq,
            "request_id": [h.request_id for h in halves],
            "role": np.array([h.role for h in halves], dtype=np.int8),
            "ts": np.array([h.ts for h in halves], dtype=np.float64),
            "score": np.array([h.score for h in halves], dtype=np.float64),
            "deployment": [h.deployment for h in halves],
            "model_version": [h.model_version for h in halves],
            "combo": np.array([h.combo for h in halves], dtype=np.int64),
            "half_seq": np.array([h.seq for h in halves], dtype=np.int64),
            # Most deployments send no fingerprint: keep their snapshots free of empty strings.
            "env": [h.env for h in halves] if any(h.env for h in halves) else [],
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Take the halves of :meth:`snapshot`; expiry order is as before."""
        self._seq = int(snapshot["seq"])
        self._pending = {}
        # Snapshots taken before halves carried their environment have no "env" column.
        envs = snapshot.get("env") or [""] * len(snapshot["request_id"])
        columns = zip(
            snapshot["request_id"],
            snapshot["role"].tolist(),
            snapshot["ts"].tolist(),
            snapshot["score"].tolist(),
            snapshot["deployment"],
            snapshot["model_version"],
            snapshot["combo"].tolist(),
            snapshot["half_seq"].tolist(),
            envs,
            strict=True,
        )
        for request_id, role, ts, score, deployment, version, combo, seq, env in columns:
            self._pending[request_id] = Half(
                request_id, role, ts, score, deployment, version, combo, seq, env
            )
        self._by_time = [(h.ts, h.seq, r) for r, h in self._pending.items()]
        heapq.heapify(self._by_time)

    def pending(self) -> list[Half]:
        """Halves still waiting, oldest first by arrival (for snapshots and diagnostics)."""
        return list(self._pending.values())
