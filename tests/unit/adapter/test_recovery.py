"""Readiness follows recovery: restores on assignment, catch-up, revocation, failures."""

import asyncio
from typing import Any

from aiokafka.structs import TopicPartition

from streamguard.contracts import load_topic_specs
from streamguard.engine import Engine
from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.runtime import Runtime, Topics
from streamguard.faust_app.runtime.base import _Stamped
from streamguard.policy import Policy
from streamguard.security import Publisher
from streamguard.settings import Settings

SPECS = load_topic_specs()
ROLES = ("predictions", "partials", "verdicts", "training_examples")
HEALTHY = {"status": "ok", "broker": "reachable", "topic_problems": [], "crashed": {}}


class Store:
    """Snapshot reads that wait for ``release`` (a slow state topic); nothing is stored."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.release = asyncio.Event()
        self.loads: list[list[str]] = []
        self.fail = fail

    async def load(self, keys: list[str], inputs: Any = None) -> dict[str, Any]:
        self.loads.append(keys)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return {}


def runtime(store: Store) -> tuple[Runtime, set[TopicPartition]]:
    """A runtime whose consumer owns every partition of the four input topics."""
    assigned = {TopicPartition(SPECS[r].name, p) for r in ROLES for p in range(SPECS[r].partitions)}
    owned: set[TopicPartition] = set()
    rt = Runtime(
        Settings(),
        Engine.create(Policy(), SPECS["predictions"].partitions),
        Metrics(),
        specs=SPECS,
        topics=Topics(None, None, None, None, None, None),
        store=store,  # type: ignore[arg-type]
        owned=lambda topic: sorted(tp.partition for tp in owned if tp.topic == topic),
        publisher=Publisher.insecure(),
    )
    owned.update(assigned)
    return rt, assigned


def ready(rt: Runtime, health: dict[str, Any] = HEALTHY) -> tuple[int, str, str]:
    status, document = rt.readiness(health)
    return status, document["status"], document["reason"]


async def settle() -> None:
    for _ in range(20):  # let the background restore run its steps
        await asyncio.sleep(0)


def test_not_ready_until_restored_and_every_source_read_to_its_end_once() -> None:
    async def scenario() -> None:
        store = Store()
        rt, assigned = runtime(store)
        assert ready(rt)[:2] == (503, "recovering")
        assert "joining" in ready(rt)[2]
        rt.on_assigned(assigned)
        await settle()
        status, _, reason = ready(rt)
        assert status == 503
        assert "restoring stage1 state: 0 of 8" in reason
        store.release.set()
        await settle()
        n = SPECS["predictions"].partitions
        assert f"catching up: {n} of {n}" in ready(rt)[2]
        for p in range(n - 1):
            assert rt.record_lag(p, 0)  # empty partitions: read to their end at once
        rt.record_lag(n - 1, 50)  # a backlog of 50 messages
        assert f"catching up: 1 of {n}" in ready(rt)[2]
        rt.stage1[n - 1].last_offset = 49
        rt.record_lag(n - 1, 50)
        assert ready(rt) == (200, "ready", "")
        rt.record_lag(n - 1, 5000)  # lag after recovery is a metric, not unreadiness
        assert ready(rt)[0] == 200
        assert ready(rt, {**HEALTHY, "status": "unhealthy", "broker": "unreachable"}) == (
            503,
            "unhealthy",
            "broker unreachable",
        )

    asyncio.run(scenario())


def test_a_first_message_during_the_restore_does_not_restore_twice() -> None:
    async def scenario() -> None:
        store = Store()
        rt, assigned = runtime(store)
        rt.on_assigned(assigned)
        await settle()
        lazy = asyncio.create_task(rt._restored("stage1", 3))  # the stage 1 agent's first message
        await settle()
        store.release.set()
        state = await lazy
        await settle()
        stage1_loads = [keys for keys in store.loads if keys[0].startswith("stage1")]
        assert len(stage1_loads) == 1  # the agent waited for the restore in progress
        assert rt.stage1[3] is state

    asyncio.run(scenario())


def test_revoking_cancels_a_restore_in_progress_and_installs_nothing() -> None:
    async def scenario() -> None:
        store = Store()
        rt, assigned = runtime(store)
        rt.on_assigned(assigned)
        await settle()
        await rt.on_revoked(assigned)
        store.release.set()
        await settle()
        assert rt.stage1 == {}
        assert rt.stage2 == {}
        assert "joining" in ready(rt)[2]
        rt.on_assigned(set())  # more replicas than partitions: idle, and ready
        assert ready(rt)[0] == 200

    asyncio.run(scenario())


def test_a_failed_restore_makes_the_worker_unhealthy_and_says_why() -> None:
    async def scenario() -> None:
        store = Store(fail=KeyError("state"))
        store.release.set()
        rt, assigned = runtime(store)
        rt.on_assigned(assigned)
        await settle()
        status, health = rt.health([])
        assert status == 503
        assert "KeyError" in health["crashed"]["recovery"]
        assert ready(rt, health) == (503, "unhealthy", "agent recovery crashed")

    asyncio.run(scenario())


def test_stamped_sends_carry_the_close_time_as_the_message_timestamp() -> None:
    sent: list[dict[str, Any]] = []

    class Topic:
        def get_topic_name(self) -> str:
            return "verdicts"

        async def send(self, **kwargs: Any) -> None:
            sent.append(kwargs)

    topic = _Stamped(Topic(), 1234.5)
    asyncio.run(topic.send(key=b"d", value=b"v", partition=None))
    assert topic.get_topic_name() == "verdicts"
    assert sent == [{"key": b"d", "value": b"v", "partition": None, "timestamp": 1234.5}]


def test_a_restored_channel_saved_before_any_new_partial_keeps_its_offset() -> None:
    """The shutdown checkpoint saves every stage-2 channel; one that read nothing since its
    restore covers what its snapshot covered, not offset -1 (which would resume at 0)."""

    class Snapshots(Store):
        def __init__(self, found: dict[str, Any]) -> None:
            super().__init__()
            self.release.set()
            self.found = found
            self.saves: list[tuple[str, int, int, list[int] | None]] = []

        async def load(self, keys: list[str], inputs: Any = None) -> dict[str, Any]:
            return {k: v for k, v in self.found.items() if k in keys}

        async def save(
            self, stage: str, partition: int, offset: int, state: Any, stamp: Any = None
        ) -> bool:
            self.saves.append((stage, partition, offset, stamp))
            return True

    async def scenario() -> None:
        fresh = Engine.create(Policy(), SPECS["predictions"].partitions).stage2.snapshot(3)
        store = Snapshots({"stage2/3": {"offset": 41, "state": fresh}})
        rt, _ = runtime(store)
        await rt._restore2_locked([3])
        assert rt.stage2[3].resume == 42
        rt.stage2[3].dirty = True  # what the shutdown checkpoint does to every channel
        await rt.snapshot_stage2()
        # No message read since the restore: no stamp of a message at that offset either.
        assert [s for s in store.saves if s[1] == 3] == [("stage2", 3, 41, None)]

    asyncio.run(scenario())
