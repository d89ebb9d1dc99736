"""``streamguard relay`` with bad arguments: one plain line and the documented exit code."""

import os
import subprocess
import sys

import pytest


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STREAMGUARD_BROKER"}
    return subprocess.run(
        [sys.executable, "-m", "streamguard", "relay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def assert_one_error_line(
    result: subprocess.CompletedProcess[str], code: int, fragment: str
) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamguard: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_relay_without_a_sink_is_a_usage_error() -> None:
    assert_one_error_line(relay("--broker", "127.0.0.1:9092"), 2, "--alertmanager URL")


def test_relay_without_a_broker_is_a_usage_error() -> None:
    assert_one_error_line(relay("--webhook", "http://127.0.0.1:9/"), 2, "STREAMGUARD_BROKER")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--webhook", "hooks.example/x"), "--webhook 'hooks.example/x'"),
        (("--alertmanager", "ftp://am:9093"), "--alertmanager 'ftp://am:9093'"),
    ],
)
def test_relay_with_a_malformed_sink_url_names_it(args: tuple[str, ...], fragment: str) -> None:
    assert_one_error_line(relay("--broker", "127.0.0.1:9092", *args), 3, fragment)


def test_relay_with_an_unreachable_broker() -> None:
    result = relay("--broker", "127.0.0.1:1", "--webhook", "http://127.0.0.1:9/")
    assert_one_error_line(result, 4, "cannot reach Kafka")
