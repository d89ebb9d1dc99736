"""Every bad argument, config or input gives one plain line and a non-zero exit."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def streamguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamguard", *args],
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


@pytest.fixture
def bad_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text("[defaults]\nwindow_s = 10\nhorizon_s = 25\n")
    return path


def test_unknown_command() -> None:
    assert_one_error_line(streamguard("bogus"), 2, "invalid choice")


def test_missing_argument() -> None:
    assert_one_error_line(streamguard("replay"), 2, "events")


def test_unreadable_replay_input(tmp_path: Path) -> None:
    assert_one_error_line(streamguard("replay", str(tmp_path / "missing.jsonl")), 3, "cannot read")


def test_bad_policy_value(tmp_path: Path, bad_policy: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    result = streamguard("replay", str(events), "--policy", str(bad_policy))
    assert_one_error_line(result, 3, "horizon_s")


def test_policy_typo_is_named(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[defaults.guards.shadow]\nmin_pair = 10\n")
    events = tmp_path / "events.jsonl"
    events.write_text("")
    result = streamguard("replay", str(events), "--policy", str(policy))
    assert_one_error_line(result, 3, "min_pair")


def test_policy_syntax_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[defaults\n")
    result = streamguard("worker", "--broker", "127.0.0.1:9", "--policy", str(policy))
    assert_one_error_line(result, 3, str(policy))


def test_unreachable_broker() -> None:
    result = streamguard("worker", "--broker", "127.0.0.1:1", "--insecure")
    assert_one_error_line(result, 4, "cannot reach Kafka")


def test_malformed_broker_url() -> None:
    assert_one_error_line(streamguard("topics", "apply", "--broker", "nohost"), 3, "nohost")


def test_topics_apply_needs_a_broker() -> None:
    env = {k: v for k, v in os.environ.items() if k != "STREAMGUARD_BROKER"}
    assert_one_error_line(streamguard("topics", "apply", env=env), 2, "no broker")


def test_bad_environment_value() -> None:
    env = {**os.environ, "STREAMGUARD_WEB_PORT": "eighty"}
    assert_one_error_line(
        streamguard("worker", "--broker", "127.0.0.1:1", env=env), 3, "STREAMGUARD_WEB_PORT"
    )


def test_a_session_timeout_too_short_for_the_heartbeats_is_refused() -> None:
    env = {**os.environ, "STREAMGUARD_BROKER_SESSION_TIMEOUT_S": "2.5"}
    assert_one_error_line(
        streamguard("worker", "--broker", "127.0.0.1:1", "--insecure", env=env),
        3,
        "at least 3 heartbeat intervals",
    )


@pytest.mark.parametrize(
    ("value", "fragment"), [("-1", "gc young threshold"), ("lots", "GC_YOUNG_THRESHOLD")]
)
def test_a_bad_gc_threshold_is_refused(value: str, fragment: str) -> None:
    env = {**os.environ, "STREAMGUARD_GC_YOUNG_THRESHOLD": value}
    assert_one_error_line(
        streamguard("worker", "--broker", "127.0.0.1:1", "--insecure", env=env), 3, fragment
    )


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("STREAMGUARD_FETCH_MAX_WAIT_MS", "nan", "not a whole number"),  # was a traceback
        ("STREAMGUARD_WEB_PORT", "1.5", "not a whole number"),  # was silently port 1
        ("STREAMGUARD_SNAPSHOT_HELD_MESSAGES", "0", "at least 1"),
        ("STREAMGUARD_STREAM_BUFFER_MB", "inf", "stream buffer"),
        ("STREAMGUARD_MAX_AHEAD_S", "-5", "max ahead"),
        ("STREAMGUARD_MAX_AHEAD_S", "nan", "max ahead"),
        ("STREAMGUARD_MAX_AHEAD_S", "soon", "not a number"),
        ("STREAMGUARD_QUARANTINE_AFTER", "-1", "quarantine after"),
        ("STREAMGUARD_QUARANTINE_AFTER", "2.5", "not a whole number"),
    ],
)
def test_bad_worker_numbers_are_one_plain_error(name: str, value: str, fragment: str) -> None:
    env = {**os.environ, name: value}
    assert_one_error_line(
        streamguard("worker", "--broker", "127.0.0.1:1", "--insecure", env=env), 3, fragment
    )


def test_demo_rejects_nonsense() -> None:
    assert_one_error_line(streamguard("demo", "--rate", "-5"), 2, "positive")


def test_worker_without_a_signing_key_refuses_to_start() -> None:
    result = streamguard("worker", "--broker", "kafka://127.0.0.1:1")
    assert_one_error_line(result, 3, "no signing key")
    assert "--insecure" in result.stderr


def test_worker_with_an_unreadable_signing_key(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text("{not json")
    result = streamguard("worker", "--broker", "kafka://127.0.0.1:1", "--signing-key", str(key))
    assert_one_error_line(result, 3, str(key))


def test_unreachable_broker_when_not_creating_topics() -> None:
    """Without topic creation nothing else talks to the broker before Faust starts."""
    result = streamguard("worker", "--broker", "127.0.0.1:1", "--insecure", "--no-create-topics")
    assert_one_error_line(result, 4, "cannot reach Kafka")
