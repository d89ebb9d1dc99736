"""Streams' buffers pause fetching on bytes as well as on messages
(``streamguard.faust_app.buffer``)."""

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from streamguard.exceptions import ConfigError
from streamguard.faust_app.buffer import BoundedBuffer, size_of
from streamguard.settings import Settings


def event(size: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(value=b"x" * size))


class Marks:
    """Counts the pause (high) and resume (drop) calls of one partition."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def high(self) -> None:
        self.log.append("pause")

    def drop(self) -> None:
        self.log.append("resume")


def put(queue: Any, item: Any, marks: Marks) -> None:
    queue.put_nowait_enhanced(item, on_pressure_high=marks.high, on_pressure_drop=marks.drop)


def buffer(maxsize: int, max_bytes: int) -> BoundedBuffer:
    return BoundedBuffer(maxsize, max_bytes=max_bytes, flow_control=FlowControlEvent())


def test_the_size_is_the_message_values_bytes() -> None:
    assert size_of(event(300)) == 300
    assert size_of(SimpleNamespace(message=SimpleNamespace(value=None))) == 0
    assert size_of("not an event") == 0


def test_bytes_pause_fetching_before_the_count_does_and_resume_below_the_low_mark() -> None:
    async def scenario() -> tuple[list[str], list[int]]:
        q = buffer(maxsize=4096, max_bytes=10_000)  # high 8,000 B, low 4,000 B
        marks = Marks()
        for _ in range(9):
            put(q, event(1_000), marks)
        assert q.bytes == 9_000
        assert marks.log == ["pause"]  # at the 9th put: 8,000 B were buffered
        seen = []
        while not q.empty():
            q.get_nowait()
            seen.append(q.bytes)
            if marks.log[-1] == "resume":
                break
        return marks.log, seen

    log, seen = asyncio.run(scenario())
    assert log == ["pause", "resume"]
    # resumed at the first get that found at most 4,000 B left (the check precedes the get)
    assert seen[-1] == 3_000


def test_sizes_are_taken_when_put_so_dropping_a_value_later_does_not_unbalance() -> None:
    async def scenario() -> int:
        q = buffer(maxsize=16, max_bytes=1 << 20)
        item = event(500)
        put(q, item, Marks())
        item.message.value = None  # what the worker does once a message is parsed
        q.get_nowait()
        return q.bytes

    assert asyncio.run(scenario()) == 0


def test_clearing_forgets_the_bytes() -> None:
    async def scenario() -> tuple[int, int]:
        q = buffer(maxsize=16, max_bytes=1 << 20)
        for _ in range(3):
            put(q, event(100), Marks())
        q.clear()  # what a rebalance does
        put(q, event(7), Marks())
        return q.bytes, q.qsize()

    assert asyncio.run(scenario()) == (7, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["put", "get"]), max_size=120))
def test_without_bytes_the_marks_are_fausts(script: list[str]) -> None:
    """Items without a value count 0 bytes: pauses and resumes come exactly as from
    Faust's own buffer, in any order of puts and gets."""

    async def run(queue: Any) -> list[str]:
        marks = Marks()
        for step in script:
            if step == "put":
                put(queue, object(), marks)
            elif not queue.empty():
                queue.get_nowait()
        return marks.log

    ours = asyncio.run(run(buffer(maxsize=10, max_bytes=1)))
    fausts = asyncio.run(run(ThrowableQueue(maxsize=10, flow_control=FlowControlEvent())))
    assert ours == fausts


def test_the_worker_app_builds_its_stream_buffers_with_the_configured_bytes() -> None:
    from streamguard.faust_app.app import create_app
    from streamguard.policy import Policy

    async def build() -> tuple[type, int]:
        settings = Settings(broker="kafka://127.0.0.1:1", insecure=True, stream_buffer_mb=2.0)
        queue = create_app(settings, Policy()).app.FlowControlQueue(maxsize=64)
        return type(queue), queue.max_bytes

    assert asyncio.run(build()) == (BoundedBuffer, 2 << 20)


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "5000", "lots"])
def test_a_bad_buffer_size_is_one_plain_error(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMGUARD_STREAM_BUFFER_MB", raw)
    with pytest.raises(ConfigError, match=r"STREAM_BUFFER_MB|stream buffer"):
        Settings.from_env()
