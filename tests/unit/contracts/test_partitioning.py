"""Kafka's default partitioner, checked against aiokafka's and the Java client's values."""

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streamguard.contracts import murmur2, partition_for

# Values of org.apache.kafka.common.utils.Utils.murmur2 (signed 32-bit in Java).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_matches_java_client_values() -> None:
    for key, signed in JAVA_MURMUR2.items():
        assert murmur2(key) == signed & 0xFFFFFFFF, key


@given(st.binary(max_size=80))
def test_murmur2_matches_aiokafka(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key) & 0xFFFFFFFF
    assert 0 <= murmur2(key) < 2**32


@given(st.binary(max_size=80) | st.text(max_size=40).map(str.encode), st.integers(1, 1000))
def test_partition_matches_aiokafka_default_partitioner(key: bytes, partitions: int) -> None:
    expected = DefaultPartitioner()(key, list(range(partitions)), [])
    assert partition_for(key, partitions) == expected
    assert 0 <= partition_for(key, partitions) < partitions


@given(st.integers(0, 9999), st.integers(1, 64))
def test_request_id_keys_like_the_emitter(n: int, partitions: int) -> None:
    key = f"req-0-{n}-{n % 7}".encode()
    assert partition_for(key, partitions) == DefaultPartitioner()(key, list(range(partitions)), [])
