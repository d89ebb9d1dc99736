"""Batched sends: one acknowledgement round for many messages, in-order resend on failure."""

import asyncio
from typing import Any

from aiokafka.errors import KafkaError

from streamguard.faust_app.metrics import Metrics
from streamguard.faust_app.outbox import send_all_reliably


class Topic:
    """Records what reached the "broker"; the sends listed in ``fail`` fail once."""

    def __init__(self, fail: set[int]) -> None:
        self.fail = fail
        self.calls = 0
        self.delivered: list[bytes] = []

    def get_topic_name(self) -> str:
        return "t"

    async def send(self, *, key: Any, value: bytes, partition: Any) -> Any:
        call = self.calls
        self.calls += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if call in self.fail:
            future.set_exception(KafkaError("broker went away"))
        else:
            self.delivered.append(value)
            future.set_result(None)
        return future


def run(topic: Topic, n: int) -> None:
    messages = [(None, f"m{i}".encode(), None) for i in range(n)]
    asyncio.run(send_all_reliably(Metrics(), topic, messages))


def test_all_are_sent_once_when_nothing_fails() -> None:
    topic = Topic(fail=set())
    run(topic, 5)
    assert topic.delivered == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert topic.calls == 5


def test_a_failure_resends_from_the_first_failed_message_in_order() -> None:
    topic = Topic(fail={2})
    run(topic, 5)
    # m3, m4 went through on the first round, and again after m2: receivers drop repeats.
    assert topic.delivered == [b"m0", b"m1", b"m3", b"m4", b"m2", b"m3", b"m4"]
    assert topic.delivered[-3:] == [b"m2", b"m3", b"m4"]
