"""The shadow guard's onset series in snapshots: full blocks as parts, written once.

Each judged slice keeps the last 720 window values (2 h) to date an onset
(:class:`~streamguard.stats.onset.OnsetTracker`). Written whole at every stage-2 snapshot, they
were most of it once full: in-process at 20 deployments (887 series), a snapshot round of every
channel went from 0.65 MB and 0.49 s to 8.9 MB and 1.70 s (README, Roadmap). A series changes
only at its end, so its values are cut into blocks of :data:`BLOCK` by their sequence number;
a complete block is a :class:`~streamguard.core.snapshot.Part`, which a store writes once
(as it does closed windows), and only the values after the last complete block are written
each time.

A block's part is made once per tracker and kept beside it (not in the guard's state, which
stage 2 pickles before every judgement). A block whose first values have left the series since
is still written whole: :func:`restore_tracker` keeps the last ``max_history`` values, as the
tracker does. A tracker restored from a snapshot makes its parts again from what it holds.

Examples
--------
>>> from streamguard.core.snapshot import pack, unpack
>>> from streamguard.stats.onset import OnsetTracker
>>> tracker, parts = OnsetTracker(max_history=300), {}
>>> for t in range(250):
...     _ = tracker.update(10.0 * t, (t % 7) / 7)
>>> saved = snapshot_tracker(tracker, parts)
>>> len(saved["blocks"]), len(saved["tail"])  # 2 blocks of 120, 10 values after them
(2, 10)
>>> again = restore_tracker(unpack(pack(saved)))
>>> again.history == tracker.history and again.snapshot() == tracker.snapshot()
True
"""

from typing import Any

from streamguard.core.snapshot import Part
from streamguard.stats.onset import OnsetTracker

__all__ = ["BLOCK", "restore_tracker", "snapshot_tracker"]

#: Values per block: at 10 s windows, 20 minutes; a series of 720 is 6 parts and a tail.
BLOCK = 120


def snapshot_tracker(tracker: OnsetTracker, parts: dict[int, Part]) -> dict[str, Any]:
    """``tracker.snapshot()`` with its history as ``blocks`` (parts) and a ``tail``.

    ``parts`` is the tracker's own cache of block parts by block number, kept between calls;
    blocks that left the series are dropped from it.
    """
    saved = tracker.snapshot(history=False)
    rows = tracker.rows()
    end = tracker.appended
    first = end - len(rows)  # sequence number of the oldest value held
    whole = end // BLOCK * BLOCK  # values before this are in complete blocks
    blocks = []
    for block in range(first // BLOCK, whole // BLOCK):
        part = parts.get(block)
        if part is None:
            lo, hi = max(block * BLOCK, first) - first, (block + 1) * BLOCK - first
            part = parts[block] = Part(rows[lo:hi].tolist())
        blocks.append(part)
    for gone in [b for b in parts if b < first // BLOCK]:
        del parts[gone]
    saved["blocks"] = blocks
    saved["tail"] = rows[max(whole, first) - first :].tolist()
    return saved


def restore_tracker(saved: dict[str, Any]) -> OnsetTracker:
    """The tracker :func:`snapshot_tracker` saved (its parts read back), or a plain snapshot."""
    if "blocks" not in saved:
        return OnsetTracker.restore(saved)
    history = [row for block in saved["blocks"] for row in block] + list(saved["tail"])
    plain = {k: v for k, v in saved.items() if k not in ("blocks", "tail")}
    return OnsetTracker.restore({**plain, "history": history})
