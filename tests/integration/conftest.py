"""Fixtures that start real processes: the embedded broker (Tansu), stopped by pid."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.broker.admin import apply_topics
from streamguard.contracts import load_topic_specs
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.testing import WorkerProcess, produce, read_topic

# ``produce`` lives in streamguard.testing; re-exported for the tests that import it from here.
__all__ = [
    "broker",
    "broker_with_topics",
    "notices_through_worker",
    "produce",
    "replay_notices",
    "strip",
    "worker",
]

Messages = list[tuple[int | None, bytes | None, bytes]]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A fresh, empty broker for one test (starting one takes ~50 ms)."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as running:
        yield running


@pytest.fixture
def broker_with_topics(broker: EmbeddedBroker) -> EmbeddedBroker:
    """A fresh broker with every topic of ``topics/`` created."""
    asyncio.run(apply_topics(broker.bootstrap))
    return broker


@pytest.fixture
def worker(broker_with_topics: EmbeddedBroker, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A running worker on the test's broker, ready (owning partitions); stopped by pid."""
    process = WorkerProcess(broker_with_topics.url, tmp_path / "worker.log").start()
    try:
        process.wait_ready(sources=8)
        yield process
    finally:
        process.stop()


def replay_notices(
    messages: Messages, guard: str, partitions: int
) -> tuple[list[dict], list[dict], float]:
    """Notices and commands of a replay, and the end of the last window ``guard`` judged.

    Only what the worker can publish: the last windows stay open (``flush``, not ``finish``).
    """
    judged: list[float] = []
    pipe = Pipeline(
        Policy(),
        partitions,
        on_verdict=lambda v: judged.append(v.window_end) if v.guard == guard else None,
    )
    for _, _, value in messages:
        pipe.feed(value)
    pipe.flush()
    notices = [a.to_dict() for a in pipe.notices]
    return notices, [c.to_dict() for c in pipe.commands], max(judged)


def notices_through_worker(  # noqa: PLR0917 - the run, then what to wait for
    broker: EmbeddedBroker,
    tmp_path: Path,
    messages: Messages,
    guard: str,
    judged_until: float,
    alerts: int,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Alerts and commands a worker publishes for ``messages``, and ``guard``'s verdicts.

    Waits until ``guard`` judged the window ending at ``judged_until`` (what replay judged),
    then for ``alerts`` alerts (a few seconds when none are expected, to see none come).
    """
    specs = load_topic_specs()
    with WorkerProcess(broker.url, tmp_path / "worker.log") as worker:
        worker.wait_ready(sources=specs["predictions"].partitions)
        produce(broker.bootstrap, messages, specs["predictions"].name)

        def judged(values: list[dict]) -> bool:
            return any(v["guard"] == guard and v["window_end"] >= judged_until for v in values)

        verdicts = asyncio.run(
            read_topic(broker.bootstrap, specs["verdicts"].name, 90, until=judged)
        )
        assert judged(verdicts)
        found = asyncio.run(
            read_topic(
                broker.bootstrap,
                specs["alerts"].name,
                30 if alerts else 3,
                until=lambda v: alerts > 0 and len(v) >= alerts,
            )
        )
        control = asyncio.run(read_topic(broker.bootstrap, specs["control"].name, 3))
    return found, control, [v for v in verdicts if v["guard"] == guard]


def strip(message: dict) -> dict:
    """A published message without its signature, to compare with replay's."""
    return {k: v for k, v in message.items() if k not in ("signature", "schema_version")}
