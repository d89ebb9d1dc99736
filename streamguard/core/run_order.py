"""Stage 1 over a run of one-event messages: the same result as one message at a time.

A run (:mod:`streamguard.contracts.runs`) is decoded as one batch, but stage 1 must account it
exactly as it would account its messages one by one, wherever flushes, restarts and run limits
cut it: otherwise a crash, or another worker's schedule, would change what is counted. One
message at a time, each event is judged against the watermark before its own message (lateness,
whether its partner or its exposure is still waiting), and halves and exposures expire after
the message that moves the watermark past their deadline, counted in that watermark's window.

So a run is split where the watermark enters another window (then every expiry inside a piece
is counted in the same window as at the piece's end), each event is judged against its own
message's watermark, and a piece whose pairing or outcome join could differ from one message at
a time (a partner or exposure that would have expired first, an outcome before its prediction,
a buffer that could fill, a late event after the last advance of the watermark) is processed
one message at a time. Those are rare in live traffic; the property tests compare both ways.

Examples
--------
>>> import numpy as np
>>> before, after = watermarks(np.array([5.0, -np.inf, 3.0, 12.0]), 4.0)
>>> before.tolist(), after.tolist()
([4.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 12.0])
>>> pieces(after, {10})
[0, 3, 4]
>>> last_advance(before, after, 0, 3)
0
"""

from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from streamguard.contracts import ROLE_CANARY, ROLE_SHADOW, Decoded, OutcomeBatch, PredictionBatch
from streamguard.contracts.runs import DecodedRun
from streamguard.core.outcomes import OutcomeJoin
from streamguard.core.pairing import PairingBuffer

if TYPE_CHECKING:
    from streamguard.core.stage1 import Stage1Report

__all__ = [
    "Buffers",
    "add_report",
    "in_order",
    "last_advance",
    "pairable",
    "pieces",
    "single",
    "watermarks",
]

F64 = npt.NDArray[np.float64]


class Buffers(Protocol):
    """What the checks read of a deployment's stage-1 state."""

    pairing: PairingBuffer
    join: OutcomeJoin
    shadowed: bool


def watermarks(ts: F64, start: float) -> tuple[F64, F64]:
    """The watermark before and after each message, given each message's event time.

    ``ts`` holds the event time of each message in order (``-inf`` for a message without a
    valid event); ``start`` is the watermark before the first one.
    """
    after = np.maximum.accumulate(np.maximum(ts, start))
    before = np.empty_like(after)
    if len(after):
        before[0] = start
        before[1:] = after[:-1]
    return before, after


def pieces(after: F64, window_sizes: set[int]) -> list[int]:
    """Bounds ``[0, ..., n]`` of the pieces within which the watermark stays in one window.

    A piece ends where, for any of the window sizes, the watermark after a message lies in
    another window than after the message before.
    """
    n = len(after)
    cuts = {0, n}
    for size in window_sizes:
        windows = np.floor(after / size)
        cuts.update((np.flatnonzero(windows[1:] != windows[:-1]) + 1).tolist())
    return sorted(cuts)


def last_advance(before: F64, after: F64, lo: int, hi: int) -> int:
    """Position of the last message in ``[lo, hi)`` that moved the watermark (``lo - 1``: none)."""
    moved = np.flatnonzero(after[lo:hi] > before[lo:hi])
    return lo + int(moved[-1]) if len(moved) else lo - 1


def _by_deployment(deployments: list[str]) -> Iterator[tuple[str, npt.NDArray[np.intp]]]:
    names = sorted(set(deployments))
    if len(names) == 1:
        yield names[0], np.arange(len(deployments), dtype=np.intp)
        return
    column = np.asarray(deployments, dtype=object)
    for name in names:
        yield name, np.flatnonzero(column == name)


def pairable(
    state: Buffers,
    batch: PredictionBatch,
    per_event: bool,
    errors: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.bool_]:
    """Predictions that go to pairing: primaries and shadows, once the deployment has shadows.

    A shadow that failed (error: true) does not: its score is a fallback, not the candidate's
    answer, so its primary stays unpaired and counts against the slice's pairing rate. Pairing
    starts at the partition's first shadow: within a message for all its events, within a run
    from the first shadow's message on (``per_event``).
    """
    is_shadow = batch.role == ROLE_SHADOW
    failed = batch.errors() if errors is None else errors
    if state.shadowed:
        shadowed: npt.NDArray[np.bool_] | bool = True
    elif per_event:
        shadowed = np.logical_or.accumulate(is_shadow)
    else:
        shadowed = bool(is_shadow.any())
    chosen: npt.NDArray[np.bool_] = (batch.role != ROLE_CANARY) & ~(is_shadow & failed) & shadowed
    return chosen


def single(run: DecodedRun, k: int) -> Decoded:
    """Message ``k`` of a run, as if it had been decoded alone."""
    decoded = run.decoded
    at = np.searchsorted(run.prediction_at, k)
    if at < len(run.prediction_at) and run.prediction_at[at] == k:
        predictions = decoded.predictions.take(np.array([at], dtype=np.intp))
        return Decoded(
            predictions, OutcomeBatch.empty(), n_events=1, max_ts=float(predictions.ts[0])
        )
    at = np.searchsorted(run.outcome_at, k)
    if at < len(run.outcome_at) and run.outcome_at[at] == k:
        outcomes = decoded.outcomes.take(np.array([at], dtype=np.intp))
        return Decoded(PredictionBatch.empty(), outcomes, n_events=1, max_ts=float(outcomes.ts[0]))
    return Decoded(PredictionBatch.empty(), OutcomeBatch.empty(), n_events=1)  # rejected


def add_report(total: "Stage1Report", report: "Stage1Report") -> None:
    """Add the counts of ``report`` to ``total``."""
    for name in (f.name for f in fields(total)):
        setattr(total, name, getattr(total, name) + getattr(report, name))


def in_order(
    deployments: Mapping[str, Buffers],
    predictions: PredictionBatch,
    outcomes: OutcomeBatch,
    *,
    at: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]],
    before: npt.NDArray[np.float64],
    end: tuple[float, int],
) -> bool:
    """True when accounting this piece at once gives what one message at a time gives.

    ``at`` holds the run position of each prediction's and outcome's message, ``before``
    the watermark before each message of the run, and ``end`` the watermark after the
    piece and the position of the last message in it that moved the watermark.
    """
    prediction_at, outcome_at = at
    watermark, settled = end
    served: dict[str, dict[str, tuple[int, float]]] = {}
    if len(predictions):
        for name, idx in _by_deployment(predictions.deployment):
            batch = predictions if len(idx) == len(predictions) else predictions.take(idx)
            state = deployments[name]
            positions = prediction_at[idx]
            # Halves and exposures left after the last move of the watermark and already
            # past their deadline wait, one message at a time, for the next move.
            tail = positions > settled
            paired = pairable(state, batch, per_event=True)
            if paired.any():
                pick = np.flatnonzero(paired)
                ts = batch.ts[pick]
                if (tail[pick] & (ts < watermark - state.pairing.ttl_s)).any():
                    return False
                ids = [batch.request_id[i] for i in pick.tolist()]
                if not state.pairing.in_order(ids, batch.role[pick], ts, before[positions[pick]]):
                    return False
            exposed = np.flatnonzero(batch.role != ROLE_SHADOW)
            join = state.join
            if len(join) + len(exposed) > join.max_pending:
                return False
            if (tail[exposed] & (batch.ts[exposed] < watermark - join.window_s)).any():
                return False
            ids = [batch.request_id[i] for i in exposed.tolist()]
            opened = dict(
                zip(
                    ids,
                    zip(positions[exposed].tolist(), batch.ts[exposed].tolist(), strict=True),
                    strict=True,
                )
            )
            # A request exposed twice, or again while open: the first exposure counts.
            if len(opened) != len(ids) or not np.isnan(join.opened_at(ids)).all():
                return False
            served[name] = opened
    if len(outcomes):
        for name, idx in _by_deployment(outcomes.deployment):
            join = deployments[name].join
            ids = [outcomes.request_id[i] for i in idx.tolist()]
            limits = before[outcome_at[idx]] - join.window_s
            # Exposures open before the piece: still open when the outcome's message came.
            waiting = join.opened_at(ids)
            if (waiting < limits).any():
                return False
            opened = served.get(name, {})
            for i, request_id in enumerate(ids):  # outcomes of this piece's own predictions
                exposure = opened.get(request_id)
                if exposure is not None and (
                    exposure[0] > outcome_at[idx[i]] or exposure[1] < limits[i]
                ):
                    return False
    return True
