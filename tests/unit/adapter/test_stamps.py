"""Snapshot stamps: what the worker saves equals what a restore reads back from the broker."""

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from streamguard.faust_app.runtime.base import _stamp
from streamguard.faust_app.state import message_stamp


@given(ms=st.integers(0, 2**50), value=st.binary(max_size=64))
def test_the_saved_stamp_equals_the_stamp_of_the_record_read_back(ms: int, value: bytes) -> None:
    # aiokafka gives the restore the record's timestamp in ms; Faust gave the worker ms / 1000.
    faust_message = SimpleNamespace(timestamp=ms / 1000.0, value=value)
    assert _stamp(faust_message) == message_stamp(ms, value)


def test_messages_that_differ_in_time_or_bytes_have_different_stamps() -> None:
    stamps = {
        tuple(message_stamp(ms, value))
        for ms in (None, 0, 1_700_000_000_000, 1_700_000_000_001)
        for value in (None, b"{}", b'{"n": 1}')
    }
    # A missing timestamp is not confused with 0, nor a missing payload with a real one.
    assert len(stamps) == 4 * 3
