"""Input messages that made a stage raise: narrowed down across restarts, then left out.

A stage that raises stops the worker (``faust_app.halt``), since its state may be half-changed, and
the restarted worker replays from its last snapshot. When the error comes from the message itself
(a bug its content triggers), every restart would stop at it again and the guard would stay down.
This holds for stage 1's predictions and for the leakage guard's training examples (always one
message at a time); stage 1 is described here. So before it exits, the worker stores a
:class:`Suspect` per crash: the offsets of the *unit* stage 1 was accounting (one message, or a run
of one-event messages) and how many crashes involved them. A restarted worker then treats each
offset by :func:`handling`:

* outside every suspect: as usual (``RUN``: one-event messages join runs);
* inside a suspect that has not crashed ``after`` times yet, or is not one known message:
  decoded and accounted alone (``ALONE``), so the next crash names one message, not a run.
  Accounting alone gives what runs give (``Pipeline(runs=False)`` is tested against runs);
* the one message a suspect names, after ``after`` crashes: left out (``SKIP``). The worker
  dead-letters it as ``quarantined`` with the error, and stage 1 covers its offset without
  accounting it.

Each suspect carries the stamp (Kafka timestamp and CRC-32 of the value) of the message at its
``last`` offset: a message is left out only if it is the one stamped, so after the broker lost
its log another message at that offset is not taken for it, and a crash at an offset whose
stamp differs starts over. A crash inside a run counts for every message of the run, so with
``after=2`` (the default) a message is left out after two crashes that involved it, the last
with the message accounted alone: one transient failure (``MemoryError`` under a spike) costs
a restart and not an event.

Examples
--------
>>> first = after_crash([], 100, 350, "ValueError: boom", [9, 4])
>>> handling(first, 200, lambda: [7, 1], after=2)
<Handling.ALONE: 'alone'>
>>> second = after_crash(first, 200, 200, "ValueError: boom", [7, 1])
>>> second[0].first, second[0].last, second[0].crashes
(200, 200, 2)
>>> handling(second, 200, lambda: [7, 1], after=2), handling(second, 201, lambda: [7, 1], 2)
(<Handling.SKIP: 'skip'>, <Handling.RUN: 'run'>)
"""

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_SUSPECTS", "Handling", "Suspect", "after_crash", "handling", "prune"]

#: Suspects kept per partition (the newest): each is a crash, so more means a broken build.
MAX_SUSPECTS = 32


class Handling(enum.Enum):
    """What stage 1 does with a message (module docstring)."""

    RUN = "run"
    ALONE = "alone"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Suspect:
    """Offsets ``first``..``last`` of one partition were being accounted at ``crashes`` crashes.

    ``stamp`` is that of the message at ``last``; None when the worker could not take it.
    """

    first: int
    last: int
    crashes: int
    error: str
    stamp: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored with the partition's state."""
        return {
            "first": self.first,
            "last": self.last,
            "crashes": self.crashes,
            "error": self.error,
            "stamp": None if self.stamp is None else list(self.stamp),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Suspect":
        """Read :meth:`to_dict`'s form back (``ValueError``, ``KeyError``, ``TypeError`` if not)."""
        stamp = data["stamp"]
        suspect = cls(
            first=int(data["first"]),
            last=int(data["last"]),
            crashes=int(data["crashes"]),
            error=str(data["error"]),
            stamp=None if stamp is None else (int(stamp[0]), int(stamp[1])),
        )
        if not 0 <= suspect.first <= suspect.last or suspect.crashes < 1:
            raise ValueError(f"not a suspect: {data!r:.200}")
        return suspect


def _stamp(stamp: list[int] | tuple[int, int] | None) -> tuple[int, int] | None:
    return None if stamp is None else (int(stamp[0]), int(stamp[1]))


def after_crash(
    suspects: list[Suspect],
    first: int,
    last: int,
    error: str,
    stamp: list[int] | tuple[int, int] | None,
) -> list[Suspect]:
    """The suspects once accounting ``first``..``last`` raised ``error``.

    A crash inside a suspect's offsets narrows it to their overlap and counts one more crash;
    but a crash whose last message has another stamp than the suspect's at the same offset is
    of another message (the log was lost and refilled), which starts over. A crash elsewhere
    is a new suspect; the others are kept, since a restore from an older snapshot reads them
    again. ``stamp`` is that of the message at ``last``.
    """
    if not 0 <= first <= last:
        raise ValueError(f"offsets {first}..{last} are not a range")
    new = _stamp(stamp)
    kept = []
    crashes = 1
    lo, hi = first, last
    for suspect in suspects:
        overlaps = suspect.first <= last and first <= suspect.last
        comparable = suspect.last == last and suspect.stamp is not None and new is not None
        if overlaps and crashes == 1 and not (comparable and suspect.stamp != new):
            crashes = suspect.crashes + 1
            lo, hi = max(first, suspect.first), min(last, suspect.last)
            if hi != last or (new is None and hi == suspect.last):
                new = suspect.stamp  # the overlap ends at the suspect's last message
        elif not overlaps:
            kept.append(suspect)
        # An overlapping suspect of another message (other stamp) is of a lost log: dropped.
    kept.append(Suspect(lo, hi, crashes, error[:500], new))
    return kept[-MAX_SUSPECTS:]


def prune(suspects: list[Suspect], resume: int) -> list[Suspect]:
    """The suspects a partition resuming at offset ``resume`` can still read."""
    return [s for s in suspects if s.last >= resume]


def handling(
    suspects: list[Suspect],
    offset: int,
    stamp_of: Callable[[], list[int] | tuple[int, int]],
    after: int,
) -> Handling:
    """How to account the message at ``offset``; ``stamp_of()`` gives its stamp when asked.

    ``after`` is the number of crashes that leaves a message out; 0 never does (then nothing
    is recorded either, and the worker stops at every restart as before).
    """
    for suspect in suspects:
        if suspect.first <= offset <= suspect.last:
            if (
                after > 0
                and suspect.crashes >= after
                and suspect.first == suspect.last
                and suspect.stamp is not None
                and _stamp(stamp_of()) == suspect.stamp
            ):
                return Handling.SKIP
            return Handling.ALONE
    return Handling.RUN
