"""Fixed-memory, mergeable sketches of item exposures: heavy hitters and distinct counts.

- :class:`SpaceSaving` -- the ``k`` most frequent items with per-item error bounds
  (Metwally, Agrawal, El Abbadi, "Efficient Computation of Frequent and Top-k Elements in
  Data Streams", ICDT 2005). Memory ``O(k)`` whatever the catalogue size.
- :class:`CountMin` -- point estimates for any item from a ``depth × width`` table of
  counters (Cormode, Muthukrishnan, "An Improved Data Stream Summary: the Count-Min Sketch
  and its Applications", J. Algorithms 55(1), 2005). Memory ``O(w·d)``.
- :class:`DistinctCounter` -- a HyperLogLog estimate of the number of distinct items
  (Flajolet, Fusy, Gandouet, Meunier, "HyperLogLog: the analysis of a near-optimal
  cardinality estimation algorithm", AofA 2007). Memory ``2^p`` bytes.

Every sketch merges with another built with the same parameters (stage 1 builds one per
source partition and window, stage 2 merges them, and windows merge over a horizon), and
round-trips through :meth:`to_dict` / :meth:`from_dict` as plain JSON-able ``dict`` / ``list``
/ ``str`` / ``int`` values.

Items are strings, hashed by :func:`~streamguard.stats.hashing.hash64`. Each sketch lives in
its own module (``space_saving``, ``count_min``, ``distinct``); this one gathers them.

Examples
--------
>>> ss = SpaceSaving(2)
>>> ss.update_many(["a", "b", "a", "c", "a"])
>>> ss.top(1), ss.total
([('a', 3)], 5)
>>> cm = CountMin(width=64, depth=3)
>>> cm.update_many(["a", "b", "a"])
>>> cm.estimate("a") >= 2
True
>>> hll = DistinctCounter(precision=10)
>>> hll.update_many([f"item-{i}" for i in range(1000)])
>>> abs(hll.estimate() - 1000) < 100
True
"""

from streamguard.stats.count_min import CountMin
from streamguard.stats.distinct import DistinctCounter
from streamguard.stats.hashing import hash64
from streamguard.stats.space_saving import SpaceSaving

__all__ = ["CountMin", "DistinctCounter", "SpaceSaving", "hash64"]
