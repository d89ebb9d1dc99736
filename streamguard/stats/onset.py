"""Detecting and dating the onset of an upward shift in a window-level series.

The guard closes one window at a time and turns each into a number normalised to "fraction
of the pause threshold" (1.0 = at the threshold). :class:`OnsetTracker` raises an alarm with
Page-Hinkley and, once something is wrong, estimates when it started so a report can say
"degraded since 12:04" rather than "noticed at 12:09".

Examples
--------
>>> tracker = OnsetTracker()
>>> alarms = [tracker.update(float(t), 0.4) for t in range(20)]
>>> alarms += [tracker.update(float(t), 2.0) for t in range(20, 26)]
>>> alarms.index(True), tracker.onset()
(22, 20.0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.stats.page_hinkley import PageHinkley

__all__ = ["OnsetTracker"]

# Inputs are fractions of the pause threshold; clipping bounds one outlier window's push on
# the Page-Hinkley sum to 10 thresholds.
_CLIP_HI = 10.0
# Upward splits whose mean difference is below this are rounding noise of a flat series
# (inputs are clipped to [0, 10], so an absolute tolerance is meaningful).
_MIN_SHIFT = 1e-9
_SNAPSHOT_VERSION = 1


class OnsetTracker:
    """Page-Hinkley alarm plus least-squares dating of an upward shift.

    Each value is clipped to ``[0, 10]`` and fed to
    :class:`~streamguard.stats.page_hinkley.PageHinkley`, the project's one-sided CUSUM of Page
    ("Continuous inspection schemes", Biometrika 1954) on deviations from the running mean:
    ``m_t = Σ (x_i − mean_i − delta)`` (with forgetting factor 0.9999), alarm when
    ``m_t − min m > threshold`` after ``min_instances`` values; after an alarm the test
    restarts from scratch at the next value. Its results are bit-identical to river's
    ``PageHinkley(mode="up")``, which the tests use as an oracle. The clipped values are also
    kept, with their timestamps, in a bounded history from which :meth:`onset` dates the
    shift.

    ADWIN is not used here: measured in this project, river's ``ADWIN(delta=0.002,
    clock=1)`` needed 20–38 windows to react to a step from 0.02 to 0.2 on window-level
    means, because its Hoeffding bound assumes values in [0, 1] and many samples on each
    side of the cut, while a window-level series offers few, already averaged, values.

    The defaults were calibrated by simulation (``tests/unit/stats/calibrate_onset.py``,
    1000 runs per case) on values ``~ N(0.4, 0.1²)`` clipped at 0: no false alarm in any
    stationary series of 360 windows (still none at σ = 0.3; 0.2% of runs at σ = 0.4, where
    threshold 2.0 gives 5%). A step to 1.5 is flagged on the 4th shifted window (median; at
    most the 5th, or the 8th when the step comes only 10 windows in, before the running mean
    has settled); a step to 3.0 on the 2nd. :meth:`onset` dated every detected step exactly.

    Parameters
    ----------
    threshold : float, default 3.0
        Page-Hinkley alarm level (lambda), in units of the normalised series.
    delta : float, default 0.25
        Magnitude of change tolerated per window (subtracted from each deviation).
    min_instances : int, default 6
        Values needed (since the start or the last alarm) before an alarm may fire.
    max_history : int, default 720
        Number of ``(ts, value)`` pairs kept for :meth:`onset`.

    Attributes
    ----------
    detected_at : float or None
        Timestamp of the latest alarm.

    Examples
    --------
    >>> tracker = OnsetTracker(max_history=100)
    >>> [tracker.update(float(t), v) for t, v in enumerate([0.3, 0.5, 0.4, 0.35, 0.45])]
    [False, False, False, False, False]
    >>> tracker.onset()
    1.0
    """

    def __init__(
        self,
        threshold: float = 3.0,
        delta: float = 0.25,
        min_instances: int = 6,
        max_history: int = 720,
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if not delta >= 0:
            raise ValueError(f"delta must be non-negative, got {delta}")
        if min_instances < 1:
            raise ValueError(f"min_instances must be at least 1, got {min_instances}")
        if max_history < 2:
            raise ValueError(f"max_history must be at least 2, got {max_history}")
        self.threshold = float(threshold)
        self.delta = float(delta)
        self.min_instances = int(min_instances)
        self.max_history = int(max_history)
        self.detected_at: float | None = None
        # The history as a ring of (ts, value) rows, grown by doubling up to max_history:
        # a deque of tuples took ~110 bytes a value (80 KB per full tracker, one per judged
        # slice) and made pickling and snapshotting the shadow guard's state slow at 2 h.
        self._rows = np.empty((0, 2), dtype=np.float64)
        self._start = 0  # row of the oldest value once the ring is full
        self._count = 0
        # Values recorded since the tracker was made (not just those kept), never reset: it
        # numbers the values, so a value's number never means another value.
        self.appended = 0
        self._ph = self._new_detector()

    def _new_detector(self) -> PageHinkley:
        return PageHinkley(
            min_instances=self.min_instances, delta=self.delta, threshold=self.threshold
        )

    @property
    def history(self) -> tuple[tuple[float, float], ...]:
        """The recorded ``(ts, clipped value)`` pairs, oldest first.

        Examples
        --------
        >>> t = OnsetTracker()
        >>> _ = t.update(0.0, 42.0)
        >>> t.history
        ((0.0, 10.0),)
        """
        return tuple(map(tuple, self._ordered().tolist()))

    def _ordered(self) -> npt.NDArray[np.float64]:
        """The history's rows, oldest first (a view unless the ring has wrapped)."""
        if self._start == 0:
            return self._rows[: self._count]
        return np.concatenate((self._rows[self._start :], self._rows[: self._start]))

    def rows(self) -> npt.NDArray[np.float64]:
        """The history as ``(n, 2)`` rows ``(ts, value)``, oldest first; the last ``n`` of the
        :attr:`appended` values (read it, do not change it)."""
        return self._ordered()

    def _append(self, ts: float, x: float) -> None:
        self.appended += 1
        rows = self._rows
        if self._count < len(rows):
            rows[self._count] = (ts, x)
            self._count += 1
        elif len(rows) < self.max_history:
            grown = np.empty((min(self.max_history, max(8, 2 * len(rows))), 2))
            grown[: self._count] = rows[: self._count]
            grown[self._count] = (ts, x)
            self._rows = grown
            self._count += 1
        else:  # full: overwrite the oldest
            rows[self._start] = (ts, x)
            self._start = (self._start + 1) % len(rows)

    def update(self, ts: float, value: float) -> bool:
        """Record one closed window's value; True if Page-Hinkley signals at this update.

        NaN values (a window without data) are ignored: not recorded, not fed, and False is
        returned.

        Parameters
        ----------
        ts : float
            Timestamp of the window (e.g. its start), used to date the onset.
        value : float
            The window's value as a fraction of the pause threshold.

        Returns
        -------
        bool
            Whether a change was detected at this update (then ``detected_at = ts``).

        Examples
        --------
        >>> t = OnsetTracker(min_instances=2, threshold=1.0)
        >>> [t.update(float(i), v) for i, v in enumerate([0.1, 0.1, 3.0])]
        [False, False, True]
        >>> t.detected_at
        2.0
        """
        if math.isnan(value):
            return False
        x = min(max(float(value), 0.0), _CLIP_HI)
        self._append(float(ts), x)
        detected = self._ph.update(x)
        if detected:
            self.detected_at = float(ts)
        return detected

    def onset(self) -> float | None:
        """Timestamp where the recorded history best splits into a lower then a higher level.

        The least-squares single change point: over splits ``1 <= k < n``, maximise the
        between-segment sum of squares ``k (n − k) / n · (mean(x[k:]) − mean(x[:k]))²``
        among splits where the later mean is higher, and return the timestamp of ``x[k]``,
        the first window of the later segment. Computed for all ``k`` at once from
        cumulative sums.

        Returns
        -------
        float or None
            The onset timestamp; None with fewer than 2 values or no upward split.

        Examples
        --------
        >>> t = OnsetTracker()
        >>> for i, v in enumerate([0.2, 0.3, 0.2, 1.4, 1.6, 1.5]):
        ...     _ = t.update(10.0 * i, v)
        >>> t.onset()
        30.0
        """
        n = self._count
        if n < 2:
            return None
        hist = self._ordered()
        x = hist[:, 1]
        # Centring first keeps the cumulative sums small, so flat series stay flat.
        x = x - x.mean()
        k = np.arange(1, n, dtype=np.float64)
        head = np.cumsum(x)[:-1]
        tail = head[-1] + x[-1] - head
        shift = tail / (n - k) - head / k
        score = np.where(shift > _MIN_SHIFT, k * (n - k) / n * shift * shift, -1.0)
        best = int(np.argmax(score))
        if score[best] < 0:
            return None
        return float(hist[best + 1, 0])

    def reset(self) -> None:
        """Forget the history, the alarm time and the Page-Hinkley state.

        Examples
        --------
        >>> t = OnsetTracker()
        >>> _ = t.update(0.0, 1.0)
        >>> t.reset()
        >>> t.history, t.detected_at
        ((), None)
        """
        self._rows = np.empty((0, 2), dtype=np.float64)
        self._start = self._count = 0
        self.detected_at = None
        self._ph = self._new_detector()

    def snapshot(self, *, history: bool = True) -> dict[str, Any]:
        """JSON-serialisable state; :meth:`restore` continues exactly where this left off.

        Without ``history``, everything but the values (a caller that saves :meth:`rows` in
        its own way, :mod:`streamguard.guards.onset_parts`, puts them back as ``history``).

        The Page-Hinkley state is stored field by field rather than replayed from the
        history, because it depends on every value since its last alarm, which may be more
        than the bounded history holds.

        Returns
        -------
        dict
            Plain ``dict`` of numbers, lists and None (no infinities or NaN).

        Examples
        --------
        >>> import json
        >>> t = OnsetTracker()
        >>> _ = t.update(0.0, 0.5)
        >>> json.loads(json.dumps(t.snapshot()))["history"]
        [[0.0, 0.5]]
        """
        out: dict[str, Any] = {
            "version": _SNAPSHOT_VERSION,
            "threshold": self.threshold,
            "delta": self.delta,
            "min_instances": self.min_instances,
            "max_history": self.max_history,
            "detected_at": self.detected_at,
            "appended": self.appended,
            "page_hinkley": self._ph.snapshot(),
        }
        if history:
            out["history"] = self._ordered().tolist()
        return out

    @classmethod
    def restore(cls, snap: dict[str, Any]) -> OnsetTracker:
        """Rebuild a tracker from :meth:`snapshot` output.

        Parameters
        ----------
        snap : dict
            A snapshot, possibly after a JSON round trip.

        Returns
        -------
        OnsetTracker
            A tracker that behaves as the snapshotted one would have.

        Raises
        ------
        ValueError
            If the snapshot version is unknown.

        Examples
        --------
        >>> t = OnsetTracker(threshold=2.0)
        >>> _ = t.update(0.0, 0.5)
        >>> u = OnsetTracker.restore(t.snapshot())
        >>> u.threshold, u.history
        (2.0, ((0.0, 0.5),))
        """
        if snap.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported OnsetTracker snapshot version {snap.get('version')}")
        new = cls(
            threshold=snap["threshold"],
            delta=snap["delta"],
            min_instances=snap["min_instances"],
            max_history=snap["max_history"],
        )
        at = snap["detected_at"]
        new.detected_at = None if at is None else float(at)
        for ts, x in snap["history"][-new.max_history :]:
            new._append(float(ts), float(x))
        new.appended = int(snap.get("appended", new.appended))  # (older snapshots lack it)
        new._ph = PageHinkley.restore(
            snap["page_hinkley"],
            min_instances=new.min_instances,
            delta=new.delta,
            threshold=new.threshold,
        )
        return new

    def __repr__(self) -> str:
        return (
            f"OnsetTracker(threshold={self.threshold!r}, delta={self.delta!r}, "
            f"min_instances={self.min_instances!r}, max_history={self.max_history!r})"
        )
