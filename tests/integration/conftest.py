"""Fixtures that start real processes: the embedded broker (Tansu), stopped by pid."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.broker.admin import apply_topics
from streamguard.testing import WorkerProcess, produce

# ``produce`` lives in streamguard.testing; re-exported for the tests that import it from here.
__all__ = ["broker", "broker_with_topics", "produce", "worker"]


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
