"""The leakage guard's input, like stage 1's: a message that raises is recorded, then left out.

The runtime is driven directly, with a state store that keeps what ``save_now`` stored and hands
it to the next "worker" (a new runtime) at its restore; the guard raises on one pipeline's
batch, as a bug that message's content triggers would.
"""

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from streamguard.contracts import TrainingBatch, decode_message
from streamguard.core.exceptions import AccountingError
from streamguard.faust_app.runtime import Topics
from streamguard.faust_app.state import message_stamp
from streamguard.guards.leakage import LeakageGuard
from streamguard.sim import TrainingPipeline
from streamguard.testing import envelopes, metric
from tests.unit.adapter.test_outbox import Topic
from tests.unit.adapter.test_recovery import SPECS, runtime

TOPIC = SPECS["training_examples"].name


class Store:
    """Restores what was saved; ``save_now`` is what a stopping worker calls."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.saved: list[tuple[str, Any]] = []

    async def load(self, keys: list[str], inputs: Any = None) -> dict[str, Any]:
        return {k: self.records[k] for k in keys if k in self.records}

    def save_now(
        self, key: str, offset: int, state: Any, stamp: list[int] | None = None, **_: Any
    ) -> bool:
        self.records[key] = {"offset": offset, "state": state, "stamp": stamp}
        self.saved.append((key, state))
        return True


def event(offset: int, value: bytes) -> SimpleNamespace:
    message = SimpleNamespace(
        topic=TOPIC, partition=0, offset=offset, value=value, timestamp=1_790_000_000.5 + offset
    )
    return SimpleNamespace(message=message, value=value, ack=lambda: None)


def batches() -> list[bytes]:
    """Three envelopes of 40 examples of one pipeline."""
    pipeline = TrainingPipeline("ctr-trainer", seed=2)
    return [envelopes(pipeline.examples(40), 1, key="pipeline")[0][2] for _ in range(3)]


def test_a_training_message_that_raises_is_recorded_then_left_out_after_two_crashes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = batches()
    poison = messages[1]
    poisoned_ids = decode_message(poison).training.example_id
    real = LeakageGuard.process

    def process(self: LeakageGuard, partition: int, offset: int, batch: TrainingBatch) -> Any:
        report = real(self, partition, offset, batch)  # counted first: the state half-changed
        if len(batch) and batch.example_id == poisoned_ids:
            raise RuntimeError("poisoned")
        return report

    monkeypatch.setattr(LeakageGuard, "process", process)
    store = Store()

    async def worker() -> tuple[Any, Topic, str | None]:
        """A new worker: restores, reads the three messages; the exception, if it stopped."""
        rt, _ = runtime(store)  # type: ignore[arg-type]
        letters = Topic(fail=set())
        rt.topics = Topics(None, None, Topic(fail=set()), Topic(fail=set()), letters, None)
        try:
            for offset, value in enumerate(messages):
                await rt.on_training_example(event(offset, value))
        except AccountingError as exc:
            return rt, letters, str(exc)
        return rt, letters, None

    rt, _, error = asyncio.run(worker())
    assert error is not None
    assert "partition 0 offset 1 raised RuntimeError: poisoned" in error
    key, state = store.saved[-1]
    assert key == "leakage/0/suspects"
    stamp = message_stamp(round((1_790_000_000.5 + 1) * 1000), poison)
    assert state == [{"first": 1, "last": 1, "crashes": 1, "error": "RuntimeError: poisoned",
                      "stamp": stamp}]  # fmt: skip
    assert store.records[key]["stamp"] == stamp

    rt, _, error = asyncio.run(worker())
    assert error is not None
    assert store.saved[-1][1][0]["crashes"] == 2

    rt, letters, error = asyncio.run(worker())
    assert error is None
    assert rt.leakage[0].last_offset == 2
    assert rt.engine.leakage.snapshot(0)["offset"] == 2
    assert len(letters.delivered) == 1
    assert b'"reason":"quarantined"' in letters.delivered[0]
    text = rt.metrics.exposition().decode()
    assert metric(text, 'streamguard_internal_errors_total{stage="leakage_quarantine"}') == 1
    counted = metric(text, 'streamguard_events_total{kind="training_example"}')
    assert counted == 2 * 40  # the other two messages, in full
    assert len(store.saved) == 2  # nothing more recorded
    status, health = rt.health([])
    assert (status, health["status"], health["dropping"]) == (200, "degraded", ["quarantine"])
    assert health["quarantined"] == [
        {
            "topic": TOPIC,
            "partition": 0,
            "offset": 1,
            "crashes": 2,
            "error": "RuntimeError: poisoned",
        }
    ]
