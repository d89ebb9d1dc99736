"""One-sided (upward) Page-Hinkley test on a stream of values.

:class:`PageHinkley` is the upward CUSUM of E. S. Page, "Continuous inspection schemes",
Biometrika 41 (1954) 100-115, on deviations from the running mean, with a forgetting factor.
Its arithmetic is that of ``river.drift.PageHinkley(mode="up")`` (river 0.26), operation for
operation, so both give bit-identical states and alarms; the tests check this with river as
an oracle. The runtime does not import river, which with scipy costs about 70 MB.

Examples
--------
>>> ph = PageHinkley(min_instances=3, delta=0.1, threshold=1.0)
>>> [ph.update(x) for x in [0.2, 0.2, 0.2, 0.2, 2.0, 2.0]]
[False, False, False, False, True, False]
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["PageHinkley"]


class PageHinkley:
    """Upward Page-Hinkley / CUSUM change detector with river's arithmetic.

    For each value ``x_t``, with ``mean_t`` the running mean of the values since the start
    (or since the last alarm), the test keeps
    ``S_t = alpha · S_{t−1} + (x_t − mean_t − delta)`` and its running minimum, and signals
    when ``S_t − min S > threshold`` once at least ``min_instances`` values have been seen.
    At the next update after an alarm the whole state starts afresh.

    The mirrored downward sum ``alpha · D_{t−1} + (x_t − mean_t + delta)`` and its running
    maximum (starting at −1, as in river) are kept too, though they never raise an alarm:
    :class:`~streamguard.stats.onset.OnsetTracker` snapshots store them.

    Parameters
    ----------
    min_instances : int, default 30
        Values needed (since the start or the last alarm) before an alarm may fire.
    delta : float, default 0.005
        Magnitude of change tolerated per value (subtracted from each deviation).
    threshold : float, default 50.0
        Alarm level (lambda).
    alpha : float, default 1 - 0.0001
        Forgetting factor applied to the cumulative sums, in ``(0, 1]``.

    Attributes
    ----------
    n : float
        Values seen since the start or the last alarm (a float, as river counts weights).
    mean : float
        Their running mean.
    sum_increase, min_increase : float
        The upward cumulative sum and its minimum (``+inf`` before the first value).
    sum_decrease, max_decrease : float
        The downward cumulative sum and its maximum (``-1.0`` before the first value).
    drift_detected : bool
        Whether the latest update signalled.

    References
    ----------
    E. S. Page, "Continuous inspection schemes", Biometrika 41 (1954) 100-115.

    Examples
    --------
    >>> ph = PageHinkley(min_instances=2, delta=0.0, threshold=1.5)
    >>> for x in [1.0, 1.0, 1.0, 4.0]:
    ...     _ = ph.update(x)
    >>> ph.drift_detected, ph.n, ph.mean
    (True, 4.0, 1.75)
    >>> _ = ph.update(1.0)  # the test restarts after an alarm
    >>> ph.n, ph.drift_detected
    (1.0, False)
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.reset()

    def reset(self) -> None:
        """Forget every value seen: the state a new detector starts from.

        Examples
        --------
        >>> ph = PageHinkley()
        >>> _ = ph.update(3.0)
        >>> ph.reset()
        >>> ph.n, ph.min_increase, ph.max_decrease
        (0.0, inf, -1.0)
        """
        self.n = 0.0
        self.mean = 0.0
        self.sum_increase = 0.0
        self.sum_decrease = 0.0
        self.min_increase = math.inf
        self.max_decrease = -1.0
        self.drift_detected = False

    def update(self, x: float) -> bool:
        """Feed one value; True if the test signals at this value.

        Parameters
        ----------
        x : float
            The next value; must be finite.

        Returns
        -------
        bool
            The new :attr:`drift_detected`.

        Raises
        ------
        ValueError
            If ``x`` is NaN or infinite (it would poison the sums for good).

        Examples
        --------
        >>> ph = PageHinkley(min_instances=1, delta=0.0, threshold=0.5)
        >>> ph.update(0.0), ph.update(2.0)
        (False, True)
        """
        if not math.isfinite(x):
            raise ValueError(f"PageHinkley values must be finite, got {x}")
        if self.drift_detected:
            self.reset()
        # Same operations, in the same order, as river 0.26 (stats.Mean with weight 1.0, then
        # PageHinkley.update), so every intermediate rounds identically.
        self.n += 1.0
        self.mean += (1.0 / self.n) * (x - self.mean)
        dev = x - self.mean
        self.sum_increase = self.alpha * self.sum_increase + dev - self.delta
        self.sum_decrease = self.alpha * self.sum_decrease + dev + self.delta
        # min/max keep their first argument on ties (0.0 vs -0.0), as river's `if x < m`.
        self.min_increase = min(self.min_increase, self.sum_increase)
        self.max_decrease = max(self.max_decrease, self.sum_decrease)
        if self.n >= self.min_instances:
            self.drift_detected = self.sum_increase - self.min_increase > self.threshold
        return self.drift_detected

    def snapshot(self) -> dict[str, Any]:
        """The state (not the parameters) as a JSON-serialisable dict.

        Returns
        -------
        dict
            Keys ``n``, ``mean``, ``sum_increase``, ``sum_decrease``, ``min_increase``
            (None for ``+inf``, which JSON cannot hold), ``max_decrease``, ``drift_detected``.

        Examples
        --------
        >>> PageHinkley().snapshot()["min_increase"] is None
        True
        """
        mi = self.min_increase
        return {
            "n": float(self.n),
            "mean": float(self.mean),
            "sum_increase": float(self.sum_increase),
            "sum_decrease": float(self.sum_decrease),
            "min_increase": float(mi) if math.isfinite(mi) else None,
            "max_decrease": float(self.max_decrease),
            "drift_detected": bool(self.drift_detected),
        }

    @classmethod
    def restore(
        cls,
        state: dict[str, Any],
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
    ) -> PageHinkley:
        """A detector with these parameters and the state from :meth:`snapshot`.

        Parameters
        ----------
        state : dict
            :meth:`snapshot` output, possibly after a JSON round trip.
        min_instances, delta, threshold, alpha
            As for the constructor (the snapshot does not hold them).

        Returns
        -------
        PageHinkley
            A detector that continues exactly as the snapshotted one would have.

        Examples
        --------
        >>> a = PageHinkley(min_instances=2, threshold=1.0)
        >>> _ = a.update(0.5)
        >>> b = PageHinkley.restore(a.snapshot(), min_instances=2, threshold=1.0)
        >>> [a.update(x) for x in [0.5, 3.0]] == [b.update(x) for x in [0.5, 3.0]]
        True
        """
        new = cls(min_instances=min_instances, delta=delta, threshold=threshold, alpha=alpha)
        new.n = float(state["n"])
        new.mean = float(state["mean"])
        new.sum_increase = float(state["sum_increase"])
        new.sum_decrease = float(state["sum_decrease"])
        mi = state["min_increase"]
        new.min_increase = math.inf if mi is None else float(mi)
        new.max_decrease = float(state["max_decrease"])
        new.drift_detected = bool(state["drift_detected"])
        return new

    def __repr__(self) -> str:
        return (
            f"PageHinkley(min_instances={self.min_instances!r}, delta={self.delta!r}, "
            f"threshold={self.threshold!r}, alpha={self.alpha!r})"
        )
