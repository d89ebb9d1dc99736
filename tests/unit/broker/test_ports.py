"""Whose port is it: tests that run side by side may be given the same free port."""

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamguard.broker.embedded import free_port, listens
from streamguard.testing import WorkerProcess

# Listens on a free port, prints it, and waits to be killed.
LISTENER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True); time.sleep(60)\n"
)


@pytest.fixture
def other_process_port() -> Iterator[int]:
    """A port another process listens on; the process is killed by pid afterwards."""
    process = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()


def test_a_socket_of_this_process_is_found_listening() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert listens(os.getpid(), port) is False  # bound, not yet listening
        sock.listen()
        assert listens(os.getpid(), port) is True
    assert listens(os.getpid(), port) is False  # closed


def test_another_process_listening_on_the_port_is_not_this_one(other_process_port: int) -> None:
    assert listens(os.getpid(), other_process_port) is False


def test_a_process_that_is_gone_cannot_be_told() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert listens(process.pid, free_port()) is None


class _Impostor(http.server.BaseHTTPRequestHandler):
    """A health endpoint that says it is ready: another test's worker on the same port."""

    def do_GET(self) -> None:
        body = b'{"sources": [0, 1, 2, 3]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_worker_is_not_ready_by_another_process_answering_on_its_port(tmp_path: Path) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker = WorkerProcess("kafka://127.0.0.1:9", tmp_path / "worker.log")
    worker.web_port = server.server_address[1]
    # Stands in for a worker still starting: alive, not listening anywhere.
    worker.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert worker.health() is not None  # the impostor answers...
        with pytest.raises(TimeoutError, match="not ready"):
            worker.wait_ready(timeout_s=1.5)  # ...but is not this worker
    finally:
        worker.kill()
        server.shutdown()
        server.server_close()
