"""Runs of one-event messages, decoded together.

A serving fleet that sends one event per Kafka message pays, per message, everything the
decoder and stage 1 do per call (column building, numpy calls with a fixed cost). Consecutive
one-event prediction and outcome messages of a partition are therefore collected into a
:class:`Run` and decoded as one batch; their rejections keep the offset and the bytes of the
message they came in, as if each had been decoded alone.

Examples
--------
>>> import orjson
>>> run = Run()
>>> for offset, value in enumerate([b'{"kind": "outcome"}', b'{"kind": "outcome"}']):
...     run.add(offset, value, orjson.loads(value))
>>> decoded = decode_run(run)
>>> [r.reason for r in decoded.decoded.rejected], decoded.rejected_at
(['missing_field', 'missing_field'], [0, 1])
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamguard.contracts.decode import Decoded, decode_events

__all__ = ["RUN_MAX_MESSAGES", "DecodedRun", "Run", "decode_run"]

#: A run is cut at this many messages: it bounds the event time a unit of stage 1 spans
#: (lateness, pairing expiry and outcome maturity are judged after each unit) and its memory.
RUN_MAX_MESSAGES = 1000


@dataclass(slots=True)
class Run:
    """Consecutive one-event messages of one partition, parsed and not yet decoded."""

    offsets: list[int] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)

    def add(self, offset: int, value: bytes, event: dict[str, Any]) -> None:
        """Append the message at ``offset`` (its raw ``value`` and its parsed ``event``)."""
        self.offsets.append(offset)
        self.values.append(value)
        self.events.append(event)

    def full(self) -> bool:
        """True when the run has reached :data:`RUN_MAX_MESSAGES` and must be processed."""
        return len(self.offsets) >= RUN_MAX_MESSAGES


@dataclass(slots=True)
class DecodedRun:
    """A run decoded as one batch, with the message each event and rejection came in.

    ``prediction_at[i]`` is the position in the run (not the offset) of the message that held
    ``decoded.predictions`` event ``i``; ``outcome_at`` likewise for the outcomes.
    ``rejected_at`` holds the offset of the message of each of ``decoded.rejected``.
    """

    decoded: Decoded
    rejected_at: list[int]
    prediction_at: npt.NDArray[np.intp]
    outcome_at: npt.NDArray[np.intp]


def decode_run(run: Run, max_ts: float = math.inf) -> DecodedRun:
    """Decode a run as one batch, keeping where each event came from.

    Each rejection carries its message's bytes and no event index, exactly as
    :func:`streamguard.contracts.decode_message` rejects a one-event message.
    """
    decoded = decode_events(run.events, max_ts, indexed=True)
    offsets = []
    bad = set()
    for rejected in decoded.rejected:
        index = rejected.event_index
        if index is None:  # pragma: no cover - every rejection of a run is indexed
            raise AssertionError("a rejection without its event's position")
        bad.add(index)
        rejected.original = run.values[index]
        rejected.event_index = None
        offsets.append(run.offsets[index])
    # Valid events keep their order within their kind (decode_events builds columns in order).
    kinds = [event["kind"] for event in run.events]
    predictions = [i for i, kind in enumerate(kinds) if kind == "prediction" and i not in bad]
    outcomes = [i for i, kind in enumerate(kinds) if kind == "outcome" and i not in bad]
    if len(predictions) != len(decoded.predictions) or len(outcomes) != len(decoded.outcomes):
        raise AssertionError("decoded events do not match the run's messages")  # pragma: no cover
    return DecodedRun(
        decoded,
        offsets,
        np.array(predictions, dtype=np.intp),
        np.array(outcomes, dtype=np.intp),
    )
