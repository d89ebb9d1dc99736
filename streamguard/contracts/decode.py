"""Decode one Kafka message into columnar batches plus rejected events.

A message holds one event, a batch envelope ``{"schema_version": 1, "events": [...]}``, or a
columnar batch of predictions (``"kind": "prediction_columns"``, :mod:`.columns`).
Each event is validated against its kind's JSON Schema (constraints read by
:mod:`streamguard.contracts.schemas`). A bad event is rejected with a reason; its neighbours in
the same envelope are kept. Decoding never raises anything but :class:`DecodeError`, and
:func:`decode_message` never raises at all: failures come back in :attr:`Decoded.rejected`.

The fast path (:mod:`.batch_rows`) checks a whole batch with C-level builtins (``map``,
``set``, ``itemgetter``) and only falls back to the per-event validator
(:func:`~streamguard.contracts.event_checks.validate_event`), which names the culprit, when a
batch check fails.

Examples
--------
>>> import orjson
>>> event = {"schema_version": 1, "kind": "prediction", "event_id": "e1", "request_id": "r1",
...          "ts": 1790000000.0, "deployment": "home-ranker", "model_version": "v1",
...          "role": "shadow", "slice": {"platform": "ios"}, "score": 0.7}
>>> d = decode_message(orjson.dumps({"schema_version": 1, "events": [event, {"kind": "?"}]}))
>>> len(d.predictions), [r.reason for r in d.rejected]
(1, ['unknown_kind'])
"""

import math
from dataclasses import dataclass, field
from functools import cache
from operator import itemgetter
from typing import Any

import orjson

from streamguard.contracts.batch_rows import fast_outcomes, fast_predictions, fast_training
from streamguard.contracts.columns import COLUMNS_KIND, check_envelope, columns_batch, rows_of
from streamguard.contracts.event_checks import check_version, validate_event
from streamguard.contracts.events import OutcomeBatch, PredictionBatch, TrainingBatch
from streamguard.contracts.exceptions import DecodeError
from streamguard.contracts.schemas import load_schema
from streamguard.contracts.typed_columns import typed_columns
from streamguard.contracts.typed_rows import typed_envelope

__all__ = [
    "MAX_MESSAGE_BYTES",
    "REASONS",
    "TYPED_MIN_BYTES",
    "Decoded",
    "Rejected",
    "decode_events",
    "decode_message",
    "parse_message",
    "validate_event",
]

#: Messages larger than this are rejected whole (Kafka's default max message size is 1 MiB;
#: envelopes may be configured larger, so the bound is generous but finite).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: Messages at least this long are first read in C as a row envelope or a columnar batch of
#: valid events (:mod:`.typed_rows`, :mod:`.typed_columns`); one-event messages are shorter,
#: and a miss of the wrong kind fails at its first key.
TYPED_MIN_BYTES = 2048

#: Every reason a message or event is rejected with: the dead letter's ``reason`` and the
#: ``reason`` label of ``streamguard_decode_failures_total`` (a bounded set, by design).
REASONS = frozenset(
    {
        "invalid_json",
        "not_an_object",
        "unknown_kind",
        "missing_field",
        "wrong_type",
        "bad_value",
        "unsupported_version",
        "ts_in_future",
        "empty_message",
        "oversized",
    }
)


@dataclass(slots=True)
class Rejected:
    """One message or event that did not meet its contract."""

    reason: str
    detail: str
    original: bytes
    event_index: int | None = None  # position inside an envelope; None for the whole message


@dataclass(slots=True)
class Decoded:
    """Result of decoding one message."""

    predictions: PredictionBatch
    outcomes: OutcomeBatch
    rejected: list[Rejected] = field(default_factory=list)
    n_events: int = 0  # events found, valid or not
    max_ts: float = -math.inf  # largest event time among valid predictions and outcomes
    #: Training examples (their own topic; label times do not move any watermark).
    training: TrainingBatch = field(default_factory=TrainingBatch.empty)


_KINDS = ("prediction", "outcome", "training_example")


def _split_kinds(
    events: list[Any], max_ts: float, rejected: list[Rejected], indexed: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Separate predictions, outcomes and training examples; reject anything else.

    When the fast path fails for a kind, every event of that kind is validated one by one and
    only the valid ones are kept, so a single bad event never costs its neighbours.
    """
    try:
        kinds = list(map(itemgetter("kind"), events))
        if set(kinds) == {"prediction"} and set(map(type, events)) == {dict}:
            return events, [], []
    except (KeyError, TypeError):  # an event without a kind, not an object, or odd kinds
        kinds = [e.get("kind") if type(e) is dict else None for e in events]
    predictions = [e for e, k in zip(events, kinds, strict=True) if k == "prediction"]
    outcomes = [e for e, k in zip(events, kinds, strict=True) if k == "outcome"]
    if len(predictions) + len(outcomes) == len(events):
        return predictions, outcomes, []
    split: dict[str, list[dict[str, Any]]] = {kind: [] for kind in _KINDS}
    for index, (event, kind) in enumerate(zip(events, kinds, strict=True)):
        target = split.get(kind) if type(kind) is str else None
        if target is not None:
            target.append(event)
            continue
        try:
            validate_event(event, max_ts)
        except DecodeError as exc:
            rejected.append(_reject(exc, event, index if indexed else None))
    return split["prediction"], split["outcome"], split["training_example"]


def _reject(exc: DecodeError, event: object, index: int | None) -> Rejected:
    try:
        original = orjson.dumps(event)
    except TypeError:  # pragma: no cover - decoded JSON always re-encodes
        original = repr(event).encode()
    return Rejected(exc.reason, exc.detail, original, index)


def decode_events(events: list[Any], max_ts: float = math.inf, indexed: bool = True) -> Decoded:
    """Decode already-parsed events (the ``events`` of an envelope, or one event in a list)."""
    rejected: list[Rejected] = []
    predictions_raw, outcomes_raw, training_raw = _split_kinds(events, max_ts, rejected, indexed)
    predictions = fast_predictions(predictions_raw, max_ts) if predictions_raw else None
    if predictions is None and predictions_raw:
        good = _validate_each_indexed(events, predictions_raw, max_ts, rejected, indexed)
        predictions = fast_predictions(good, max_ts) if good else None
    outcomes = fast_outcomes(outcomes_raw, max_ts) if outcomes_raw else None
    if outcomes is None and outcomes_raw:
        good = _validate_each_indexed(events, outcomes_raw, max_ts, rejected, indexed)
        outcomes = fast_outcomes(good, max_ts) if good else None
    training = fast_training(training_raw) if training_raw else None
    if training is None and training_raw:
        good = _validate_each_indexed(events, training_raw, max_ts, rejected, indexed)
        training = fast_training(good) if good else None
    rejected.sort(key=lambda r: -1 if r.event_index is None else r.event_index)
    return _decoded(
        predictions if predictions is not None else PredictionBatch.empty(),
        outcomes if outcomes is not None else OutcomeBatch.empty(),
        len(events),
        rejected,
        training if training is not None else TrainingBatch.empty(),
    )


def _decoded(
    predictions: PredictionBatch,
    outcomes: OutcomeBatch,
    n_events: int,
    rejected: list[Rejected] | None = None,
    training: TrainingBatch | None = None,
) -> Decoded:
    decoded = Decoded(
        predictions=predictions,
        outcomes=outcomes,
        rejected=rejected or [],
        n_events=n_events,
        training=training if training is not None else TrainingBatch.empty(),
    )
    highs = [b.ts.max() for b in (predictions, outcomes) if len(b)]
    if highs:
        decoded.max_ts = float(max(highs))
    return decoded


def _validate_each_indexed(
    events: list[Any],
    subset: list[dict[str, Any]],
    max_ts: float,
    rejected: list[Rejected],
    indexed: bool,
) -> list[dict[str, Any]]:
    position = {id(e): i for i, e in enumerate(events)}
    good = []
    for event in subset:
        try:
            validate_event(event, max_ts)
        except DecodeError as exc:
            rejected.append(_reject(exc, event, position[id(event)] if indexed else None))
        else:
            good.append(event)
    return good


def decode_message(value: bytes | None, max_ts: float = math.inf, *, typed: bool = True) -> Decoded:
    """Decode one Kafka message value; never raises.

    Parameters
    ----------
    value
        The raw message value (``None`` for a tombstone).
    max_ts
        Events later than this (epoch seconds) are rejected as ``ts_in_future``: one event
        from a wrong clock would otherwise move the watermark and make everything else late.
    typed
        Read long row envelopes and columnar batches in C first (:data:`TYPED_MIN_BYTES`);
        False decodes every message through parsed dicts. The results are the same (tests
        compare the two).
    """
    parsed = parse_message(value, max_ts, typed=typed)
    if isinstance(parsed, Decoded):
        return parsed
    decoded = decode_events([parsed], max_ts, indexed=False)
    for rejected in decoded.rejected:
        rejected.original = value or b""  # a single-event message is dead-lettered byte for byte
    return decoded


def parse_message(
    value: bytes | None, max_ts: float = math.inf, *, typed: bool = True
) -> dict[str, Any] | Decoded:
    """A one-event prediction or outcome message's event, parsed; any other message decoded.

    The event is returned as parsed JSON, not yet validated, so that consecutive one-event
    messages can be decoded together by :func:`decode_events` (one pass of column building
    instead of one per message); anything else (envelopes, columnar batches, training
    examples, messages that are not an event) comes back as its :class:`Decoded`, exactly
    as :func:`decode_message` gives it. Row envelopes and columnar batches of
    :data:`TYPED_MIN_BYTES` or more are first read in C (:mod:`.typed_rows`,
    :mod:`.typed_columns`), unless ``typed`` is False.

    >>> parse_message(b'{"kind": "outcome", "ts": 1}')
    {'kind': 'outcome', 'ts': 1}
    >>> parse_message(b"[]").rejected[0].reason
    'not_an_object'
    """
    if value is None or len(value) == 0:
        return _whole("empty_message", "message has no value", b"" if value is None else value)
    if len(value) > MAX_MESSAGE_BYTES:
        detail = f"message of {len(value)} bytes exceeds {MAX_MESSAGE_BYTES}"
        return _whole("oversized", detail, value[:1024])
    if typed and len(value) >= TYPED_MIN_BYTES:
        if read := typed_envelope(value, max_ts):
            return _decoded(*read)
        if (batch := typed_columns(value, max_ts)) is not None:
            return _decoded(batch, OutcomeBatch.empty(), len(batch))
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return _whole("invalid_json", str(exc)[:200], value)
    if type(parsed) is not dict:
        return _whole("not_an_object", f"message is a JSON {type(parsed).__name__}", value)
    if parsed.get("kind") == COLUMNS_KIND:
        return _decode_columns(parsed, value, max_ts)
    if "events" in parsed and "kind" not in parsed:
        try:
            check_version(parsed)
        except DecodeError as exc:
            return _whole(exc.reason, exc.detail, value)
        events = parsed["events"]
        extra = set(parsed) - {"schema_version", "events"}
        if type(events) is not list:
            return _whole("wrong_type", "envelope events must be an array", value)
        if extra:
            return _whole("bad_value", f"envelope has unknown fields {sorted(extra)}", value)
        if len(events) > _envelope_max_events():
            detail = f"envelope has {len(events)} events, more than {_envelope_max_events()}"
            return _whole("bad_value", detail, value)
        return decode_events(events, max_ts, indexed=True)
    kind = parsed.get("kind")
    if kind == "prediction" or kind == "outcome":  # noqa: PLR1714 - kind may be unhashable
        return parsed
    decoded = decode_events([parsed], max_ts, indexed=False)
    for rejected in decoded.rejected:
        rejected.original = value  # a single-event message is dead-lettered byte for byte
    return decoded


def _decode_columns(parsed: dict[str, Any], value: bytes, max_ts: float) -> Decoded:
    """A columnar batch: straight to arrays, or row by row when a column check fails."""
    try:
        n, columns = check_envelope(parsed)
    except DecodeError as exc:
        return _whole(exc.reason, exc.detail, value)
    batch = columns_batch(columns, n, max_ts)
    if batch is None:
        return decode_events(rows_of(columns, n), max_ts, indexed=True)
    decoded = Decoded(predictions=batch, outcomes=OutcomeBatch.empty(), n_events=n)
    if n:
        decoded.max_ts = float(batch.ts.max())
    return decoded


@cache
def _envelope_max_events() -> int:
    return int(load_schema("envelope")["properties"]["events"].get("maxItems", 1 << 62))


def _whole(reason: str, detail: str, original: bytes) -> Decoded:
    return Decoded(
        predictions=PredictionBatch.empty(),
        outcomes=OutcomeBatch.empty(),
        rejected=[Rejected(reason, detail, original, None)],
        n_events=0,
    )
