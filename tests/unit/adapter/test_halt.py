"""A stage's exception stops the worker at once (faust_app.halt); cancellation does not."""

import asyncio

import pytest

from streamguard.faust_app.halt import EXIT_STAGE_FAILED, stops_worker


class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []
        self.recorded: list[tuple[str, str]] = []

    def record(self, where: str, exc: BaseException) -> None:
        self.recorded.append((where, str(exc)))

    def exit(self, code: int) -> None:
        self.codes.append(code)  # os._exit would not return


def test_an_exception_is_recorded_then_the_process_exits_with_its_status() -> None:
    exits = Exits()
    with (
        pytest.raises(RuntimeError, match="half-accounted"),
        stops_worker("stage1", exits.record, exits.exit),
    ):
        raise RuntimeError("half-accounted")
    assert exits.recorded == [("stage1", "half-accounted")]
    assert exits.codes == [EXIT_STAGE_FAILED] == [70]


def test_cancellation_and_a_clean_end_pass_through_without_exiting() -> None:
    exits = Exits()
    with pytest.raises(asyncio.CancelledError), stops_worker("stage2", exits.record, exits.exit):
        raise asyncio.CancelledError  # a rebalance or a stop: not a failure
    with stops_worker("stage2", exits.record, exits.exit):
        pass
    assert exits.recorded == []
    assert exits.codes == []
