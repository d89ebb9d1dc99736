"""HyperLogLog distinct counts (Flajolet et al., AofA 2007) with Ertl's improved estimator."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from streamguard.stats.hashing import (
    HASH_NAME,
    VERSION,
    check_kind,
    hash64,
)

__all__ = ["DistinctCounter"]


def _sigma(x: float) -> float:
    """Ertl's ``σ(x) = x + Σ_{k≥1} x^(2^k) 2^(k−1)``, summed until it stops changing."""
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    """Ertl's ``τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^(−k)))² 2^(−k)) / 3``."""
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == previous:
            return z / 3.0


def _ertl_estimate(registers: npt.NDArray[np.uint8], p: int) -> float:
    m = 1 << p
    q = 64 - p
    histogram = np.bincount(registers, minlength=q + 2).tolist()
    z = m * _tau(1.0 - histogram[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + histogram[k])
    z += m * _sigma(histogram[0] / m)
    if z == 0.0:  # every register saturated: beyond what 64-bit hashes can count
        return math.inf
    return m * m / (2.0 * math.log(2.0)) / z


class DistinctCounter:
    """HyperLogLog distinct-count estimate with ``m = 2^precision`` registers.

    The top ``p`` bits of :func:`hash64` choose a register; the register keeps the largest
    ``ρ`` seen, the position of the first 1-bit in the remaining ``64 − p`` bits. The raw
    estimate is ``α_m m² / Σ_j 2^(−M_j)`` (Flajolet et al. 2007); when it is at most
    ``2.5 m`` and some registers are still 0, linear counting ``m ln(m / V)`` (``V`` = zero
    registers) is used instead. With a 64-bit hash no large-range correction is needed
    (Heule, Nunkesser, Hall, "HyperLogLog in Practice", EDBT 2013); their empirical bias
    correction tables are not used. Relative standard error ``1.04 / sqrt(m)``: 1.6 % at the
    default ``p = 12`` (4096 one-byte registers, 4 KiB).

    Parameters
    ----------
    precision : int, default 12
        ``p`` in ``[4, 18]``.

    Attributes
    ----------
    precision : int
        ``p``.
    registers : numpy.ndarray
        ``uint8`` registers, length ``2^p``.

    Raises
    ------
    ValueError
        If ``precision`` is outside ``[4, 18]``.

    Examples
    --------
    >>> hll = DistinctCounter()
    >>> hll.update_many(["a", "b", "a"])
    >>> round(hll.estimate(), 3)
    2.0
    >>> round(hll.relative_standard_error, 4)
    0.0163
    """

    def __init__(self, precision: int = 12) -> None:
        p = operator.index(precision)
        if not 4 <= p <= 18:
            raise ValueError(f"precision must be in [4, 18], got {precision}")
        self.precision = p
        self.registers: npt.NDArray[np.uint8] = np.zeros(1 << p, dtype=np.uint8)

    @property
    def relative_standard_error(self) -> float:
        """``1.04 / sqrt(m)``, the estimate's relative standard error."""
        return 1.04 / math.sqrt(1 << self.precision)

    def update(self, item: str) -> None:
        """Add one item.

        Examples
        --------
        >>> hll = DistinctCounter(4)
        >>> hll.update("a")
        >>> int(hll.registers.max()) > 0
        True
        """
        self.update_many([item])

    def update_many(self, items: Iterable[str]) -> None:
        """Add a batch (duplicates removed first, then hashed and registers maxed with numpy).

        Parameters
        ----------
        items : iterable of str
            The batch.

        Examples
        --------
        >>> hll = DistinctCounter(8)
        >>> hll.update_many(["a"] * 100)
        >>> round(hll.estimate(), 3)
        1.002
        """
        unique = list(set(items))
        if not unique:
            return
        p = self.precision
        h = hash64(unique)
        index = (h >> np.uint64(64 - p)).astype(np.intp)
        rest = h << np.uint64(p)
        # Bit length of a uint64, exactly, from float64 exponents of its two 32-bit halves.
        _, hi_exp = np.frexp((rest >> np.uint64(32)).astype(np.float64))
        _, lo_exp = np.frexp((rest & np.uint64(0xFFFFFFFF)).astype(np.float64))
        bit_length = np.where(hi_exp > 0, 32 + hi_exp, lo_exp)
        rho = np.minimum(64 - bit_length + 1, 64 - p + 1).astype(np.uint8)
        np.maximum.at(self.registers, index, rho)

    def estimate(self, method: Literal["flajolet", "ertl"] = "flajolet") -> float:
        """Estimated number of distinct items added.

        ``"flajolet"`` is the standard estimator described in the class docstring (raw
        estimate, linear counting when the raw estimate is at most ``2.5 m``). Around that
        switch (``n ≈ 2.5 m``, about 10 000 at ``p = 12``) it is biased upwards and its
        error is larger than ``1.04 / sqrt(m)``: over 400 random sets of 10 000 strings at
        ``p = 12``, mean +1.3 % and standard deviation 2.6 % (1.6× the nominal 1.63 %),
        against −0.1 % and 1.3 % for ``"ertl"``. ``"ertl"`` is the improved estimator of
        Ertl ("New cardinality estimation algorithms for HyperLogLog sketches",
        arXiv:1702.01284, 2017, Algorithm 6):
        ``α_∞ m² / (m σ(C_0/m) + Σ_{k=1}^{q} C_k 2^(−k) + m τ(1 − C_{q+1}/m) 2^(−q))`` with
        ``C_k`` the number of registers equal to ``k``, ``q = 64 − p``,
        ``α_∞ = 1 / (2 ln 2)``, ``σ(x) = x + Σ_{k≥1} x^(2^k) 2^(k−1)`` and
        ``τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^(−k)))² 2^(−k)) / 3``; it needs no switch and has
        no such bias, and agrees with the standard one elsewhere.

        Parameters
        ----------
        method : {"flajolet", "ertl"}, default "flajolet"
            Estimator.

        Returns
        -------
        float
            The estimate; 0 when empty.

        Raises
        ------
        ValueError
            If ``method`` is unknown.

        Examples
        --------
        >>> DistinctCounter().estimate()
        0.0
        >>> hll = DistinctCounter(8)
        >>> hll.update_many([str(i) for i in range(600)])
        >>> [abs(hll.estimate(method) / 600 - 1) < 0.15 for method in ("flajolet", "ertl")]
        [True, True]
        >>> DistinctCounter().estimate("ertl")
        0.0
        """
        m = 1 << self.precision
        if method == "ertl":
            return _ertl_estimate(self.registers, self.precision)
        if method != "flajolet":
            raise ValueError(f"method must be 'flajolet' or 'ertl', got {method!r}")
        alpha = {16: 0.673, 32: 0.697, 64: 0.709}.get(m, 0.7213 / (1.0 + 1.079 / m))
        raw = alpha * m * m / float(np.sum(np.ldexp(1.0, -self.registers.astype(np.int64))))
        zeros = int(np.count_nonzero(self.registers == 0))
        if raw <= 2.5 * m and zeros > 0:
            return m * math.log(m / zeros)
        return raw

    def merge(self, other: DistinctCounter) -> DistinctCounter:
        """A new counter of the union: register-wise maximum (exact, like building on both).

        Parameters
        ----------
        other : DistinctCounter
            A counter with the same precision.

        Returns
        -------
        DistinctCounter
            The merged counter; both inputs are unchanged.

        Raises
        ------
        ValueError
            If the precisions differ.

        Examples
        --------
        >>> a, b = DistinctCounter(8), DistinctCounter(8)
        >>> a.update_many(["x", "y"])
        >>> b.update_many(["y", "z"])
        >>> round(a.merge(b).estimate(), 3)
        3.018
        """
        if not isinstance(other, DistinctCounter):
            raise TypeError(f"can only merge DistinctCounter, got {type(other).__name__}")
        if other.precision != self.precision:
            raise ValueError(f"precisions differ: {self.precision} vs {other.precision}")
        merged = DistinctCounter(self.precision)
        merged.registers = np.maximum(self.registers, other.registers)
        return merged

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state; ``registers`` is a list of ``2^p`` small ints.

        Returns
        -------
        dict
            ``{"kind", "version", "hash", "precision", "registers"}``.

        Examples
        --------
        >>> len(DistinctCounter(4).to_dict()["registers"])
        16
        """
        return {
            "kind": "hyperloglog",
            "version": VERSION,
            "hash": HASH_NAME,
            "precision": self.precision,
            "registers": self.registers.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistinctCounter:
        """Rebuild a counter from :meth:`to_dict` output.

        Parameters
        ----------
        d : dict
            The state.

        Returns
        -------
        DistinctCounter
            An equivalent counter.

        Raises
        ------
        ValueError
            If kind, version or hash differ, or the registers are malformed.

        Examples
        --------
        >>> hll = DistinctCounter(6)
        >>> hll.update("a")
        >>> DistinctCounter.from_dict(hll.to_dict()).estimate() == hll.estimate()
        True
        """
        check_kind(d, "hyperloglog")
        if d.get("hash") != HASH_NAME:
            raise ValueError(f"unsupported hash {d.get('hash')!r}")
        counter = cls(int(d["precision"]))
        registers = np.asarray(d["registers"], dtype=np.int64)
        limit = 64 - counter.precision + 1
        if registers.shape != counter.registers.shape or np.any(
            (registers < 0) | (registers > limit)
        ):
            raise ValueError("registers have the wrong length or values out of range")
        counter.registers = registers.astype(np.uint8)
        return counter

    def __repr__(self) -> str:
        return f"DistinctCounter(precision={self.precision})"
