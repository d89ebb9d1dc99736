"""The embedded broker starts only on a port it listens on itself."""

import socket

import pytest

from streamguard.broker import BrokerError, EmbeddedBroker
from streamguard.broker.embedded import listens

pytestmark = pytest.mark.integration


def test_a_given_port_in_use_is_a_plain_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(port=port)
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port} exited .* port in use"):
            broker.start(timeout=10)
        assert broker.pid is None  # nothing left running


def test_a_chosen_port_taken_meanwhile_is_chosen_again() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker()
        broker.port = taken.getsockname()[1]  # what free_port gave, then another process took
        with broker:
            assert broker.port != taken.getsockname()[1]
            assert broker.pid is not None
            assert listens(broker.pid, broker.port) is True
