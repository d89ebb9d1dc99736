"""The shadow guard's onset series in snapshots: full blocks as parts, written once.

Each judged slice keeps the last 720 window values (2 h) to date an onset
(:class:`~streamguard.stats.onset.OnsetTracker`). Written whole at every stage-2 snapshot, they
were most of it once full: in-process at 20 deployments (887 series), a snapshot round of every
channel went from 0.65 MB and 0.49 s to 8.9 MB and 1.70 s (``benchmarks/HISTORY.md``). A series
changes only at its end, so its values are cut into blocks of :data:`BLOCK` by their sequence
number; a complete block is a :class:`~streamguard.core.snapshot.Part`, which a store writes once
(as it does closed windows), and only the values outside such blocks are written each time:
with full series, a round took 0.21 s and 2.0 MB instead (``benchmarks/HISTORY.md``).

Only blocks the series holds whole are parts; the values of a block partly gone from the
series are written inline (``head``), as are those after the last complete block (``tail``).
So the snapshot depends only on the series (its values and how many it was ever given), and a
tracker restored from a snapshot, or unpickled, writes the same bytes as the one that never
stopped. A block's part is made once per tracker and kept beside it (not in the guard's
state, which stage 2 pickles before every judgement): about 10 KiB per full series, as much
as the series itself.

Examples
--------
>>> from streamguard.core.snapshot import pack, unpack
>>> from streamguard.stats.onset import OnsetTracker
>>> tracker, parts = OnsetTracker(max_history=300), {}
>>> for t in range(250):
...     _ = tracker.update(10.0 * t, (t % 7) / 7)
>>> saved = snapshot_tracker(tracker, parts)
>>> len(saved["head"]), len(saved["blocks"]), len(saved["tail"])  # 2 blocks of 120 and 10
(0, 2, 10)
>>> again = restore_tracker(unpack(pack(saved)))
>>> again.history == tracker.history and again.snapshot() == tracker.snapshot()
True
"""

from typing import Any

from streamguard.core.snapshot import Part
from streamguard.stats.onset import OnsetTracker

__all__ = ["BLOCK", "BLOCKS_VERSION", "restore_tracker", "snapshot_tracker"]

#: Values per block: at 10 s windows, 20 minutes; a series of 720 is 5 or 6 parts, the rest
#: inline.
BLOCK = 120
#: Version of a tracker snapshot in blocks (:meth:`OnsetTracker.snapshot`'s is 1).
BLOCKS_VERSION = 2


def snapshot_tracker(tracker: OnsetTracker, parts: dict[int, Part]) -> dict[str, Any]:
    """``tracker.snapshot()`` with its history as ``blocks`` (parts) and a ``tail``.

    ``parts`` is the tracker's own cache of block parts by block number, kept between calls;
    blocks that left the series are dropped from it.
    """
    saved = tracker.snapshot(history=False)
    saved["version"] = BLOCKS_VERSION  # an older worker refuses it by its version
    rows = tracker.rows()
    end = tracker.appended
    first = end - len(rows)  # number of the oldest value held
    start = -(-first // BLOCK)  # the first block wholly held
    stop = max(start, end // BLOCK)  # blocks before this one are complete
    blocks = []
    for block in range(start, stop):
        part = parts.get(block)
        if part is None:
            lo = block * BLOCK - first
            part = parts[block] = Part(rows[lo : lo + BLOCK].tolist())
        blocks.append(part)
    for gone in [b for b in parts if b < start]:
        del parts[gone]
    # What the blocks leave out, inline: the values before the first whole block (the rest
    # of a block partly gone from the series) and those after the last complete one.
    saved["head"] = rows[: max(0, min(start * BLOCK, end) - first)].tolist()
    saved["blocks"] = blocks
    saved["tail"] = rows[stop * BLOCK - first :].tolist()  # stop * BLOCK >= first: ceil above
    return saved


def restore_tracker(saved: dict[str, Any]) -> OnsetTracker:
    """The tracker :func:`snapshot_tracker` saved (its parts read back), or a plain snapshot."""
    if "blocks" not in saved:
        return OnsetTracker.restore(saved)
    if saved.get("version") != BLOCKS_VERSION:
        raise ValueError(f"unsupported onset blocks version {saved.get('version')}")
    history = [*saved["head"], *(row for block in saved["blocks"] for row in block)]
    history += saved["tail"]
    plain = {k: v for k, v in saved.items() if k not in ("head", "blocks", "tail")}
    return OnsetTracker.restore({**plain, "version": 1, "history": history})
