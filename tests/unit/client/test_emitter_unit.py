"""Emitter behaviour that needs no broker: argument checks and use before start."""

import asyncio
from typing import Any

import orjson
import pytest

from streamguard.client import ENVELOPE_OVERHEAD, Emitter, EmitterError
from streamguard.client.batching import ENVELOPE_PREFIX, ENVELOPE_SUFFIX


def test_envelope_framing_is_the_json_of_the_envelope() -> None:
    events = [{"request_id": "a", "x": 1}, {"request_id": "b", "y": [1, 2]}]
    framed = ENVELOPE_PREFIX + b",".join(orjson.dumps(e) for e in events) + ENVELOPE_SUFFIX
    assert orjson.loads(framed) == {"schema_version": 1, "events": events}
    assert len(ENVELOPE_PREFIX) + len(ENVELOPE_SUFFIX) == ENVELOPE_OVERHEAD


@pytest.mark.parametrize(
    "kwargs",
    [{"max_batch_events": 0}, {"max_buffered_events": 0}, {"max_batch_bytes": ENVELOPE_OVERHEAD}],
)
def test_rejects_impossible_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        Emitter("127.0.0.1:1", **kwargs)


def test_emit_before_start_is_an_error() -> None:
    async def scenario() -> None:
        emitter = Emitter("127.0.0.1:1")
        with pytest.raises(EmitterError):
            emitter.emit({"request_id": "r1"})
        await emitter.stop()  # stopping an emitter that never started does nothing

    asyncio.run(scenario())


def test_training_examples_emitter_routes_by_pipeline() -> None:
    from streamguard.client.batching import PartitionBuffer
    from streamguard.client.emitter import _RUNNING
    from streamguard.contracts import load_topic_specs, partition_for
    from streamguard.sim import TrainingPipeline

    async def scenario() -> None:
        emitter = Emitter.for_training_examples("127.0.0.1:1")
        assert emitter.topic == load_topic_specs()["training_examples"].name
        # As start() leaves it, without a broker: 8 partitions, running.
        emitter._partitions = [PartitionBuffer(i, asyncio.Event()) for i in range(8)]
        emitter._state = _RUNNING
        for name in ("ctr-trainer", "ranker-trainer", "ads-trainer"):
            for example in TrainingPipeline(pipeline=name).examples(5):
                assert emitter.emit(example)
        for part in emitter._partitions:
            for key, _ in part.open:
                assert partition_for(key, 8) == part.index
        keys = sorted({k for p in emitter._partitions for k, _ in p.open})
        assert keys == [b"ads-trainer", b"ctr-trainer", b"ranker-trainer"]
        with pytest.raises(ValueError, match="pipeline"):
            emitter.emit({"request_id": "r1"})

    asyncio.run(scenario())


def test_columnar_emitter_sends_predictions_as_columns_and_the_rest_as_rows() -> None:
    from streamguard.client.batching import PartitionBuffer
    from streamguard.client.emitter import _RUNNING
    from streamguard.contracts import decode_message
    from streamguard.sim import TrafficGenerator

    sent: list[bytes] = []

    async def capture(partition: int, messages: list[tuple[bytes, bytes]]) -> int:
        sent.extend(value for _, value in messages)
        return len(messages)

    async def scenario() -> None:
        emitter = Emitter("127.0.0.1:1", columnar=True)
        emitter._partitions = [PartitionBuffer(i, asyncio.Event()) for i in range(8)]
        emitter._state = _RUNNING
        emitter._with_retries = capture  # type: ignore[method-assign]
        events = next(TrafficGenerator(rate=200, seed=1, start_ts=1_790_000_000.0).seconds(1))
        predictions = [e for e in events if e["kind"] == "prediction"]
        outcome = {**predictions[0], "kind": "outcome", "value": 1.0}
        for event in [*predictions, outcome]:
            assert emitter.emit(event)
        for part in emitter._partitions:
            part.seal()
            while part.sealed:
                await emitter._send(part.index, part.sealed.popleft())

    asyncio.run(scenario())
    kinds = [orjson.loads(value).get("kind") for value in sent]
    assert kinds.count(None) == 1  # the partition with the outcome: a row envelope
    assert kinds.count("prediction_columns") == len(sent) - 1
    decoded = [decode_message(value) for value in sent]
    assert all(not d.rejected for d in decoded)
    assert sum(len(d.predictions) for d in decoded) + 1 == sum(d.n_events for d in decoded)
