"""``streamguard replay``: alert-only findings are printed too, next to commands."""

import os
import re
from pathlib import Path

import jsonschema
import orjson

from streamguard.contracts import load_schema
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from tests.faults.helpers import raising
from tests.unit.cli.test_errors import assert_one_error_line, streamguard
from tests.unit.cli.test_simulate import simulate


def test_replay_prints_the_determinism_notice_of_a_nondeterministic_env(tmp_path: Path) -> None:
    recording = simulate(tmp_path, "nondeterministic-env", 100, 90)
    result = streamguard("replay", str(recording), "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    printed = [orjson.loads(line) for line in lines]
    assert printed, "a notice-only finding printed nothing"
    assert not [p for p in printed if "action" in p]  # no command: determinism only alerts
    (notice,) = [p for p in printed if p["guard"] == "determinism"]
    jsonschema.validate(notice, load_schema("alert"))  # what the alerts topic carries
    assert notice["deployment"] == "home-ranker"
    assert notice["evidence"]["action"] == "notice"
    assert "environment" in notice["summary"]
    # Byte for byte what the engine decided, in the same order.
    pipe = Pipeline(Policy(), 8)
    for line in recording.read_bytes().splitlines():
        pipe.feed(line)
    pipe.finish()
    assert lines == [n.to_json().decode() for n in pipe.notices]
    summary = result.stderr.strip().splitlines()[-1]
    counts = re.search(r"(\d+) commands, (\d+) alerts \((\d+) notices with no command\)", summary)
    assert counts is not None, summary
    assert counts.groups() == ("0", str(len(pipe.alerts)), str(len(printed)))


def test_a_message_that_makes_replay_raise_is_named_in_one_line(tmp_path: Path) -> None:
    """What the worker leaves out after two crashes (quarantine), replay names and stops at."""
    recording = simulate(tmp_path, "shadow-deviation", 100, 30)
    lines = recording.read_bytes().splitlines()
    poison = orjson.loads(lines[6])["events"][0]["event_id"]
    env = {**os.environ, **raising(f"event:{poison}")}
    result = streamguard("replay", str(recording), "--no-progress", env=env)
    assert_one_error_line(result, 4, "line 7: accounting predictions partition ")
    assert f"raised RuntimeError: injected: event:{poison}" in result.stderr
    assert result.stdout == ""  # nothing was decided before line 7


def test_a_guard_that_raises_gives_a_critical_notice_and_the_others_commands(
    tmp_path: Path,
) -> None:
    """Replay isolates a failing guard as the worker does (core.guard_failure)."""
    recording = simulate(tmp_path, "shadow-deviation", 100, 300)
    plain = streamguard("replay", str(recording), "--no-progress")
    env = {**os.environ, **raising("guard:canary")}
    result = streamguard("replay", str(recording), "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    failures = [m for m in lines if m.get("guard") == "canary" and "alert_id" in m]
    assert len(failures) == 1  # one notice for the bug, however many closes it fails
    assert failures[0]["severity"] == "critical"
    assert "RuntimeError: injected: guard:canary" in failures[0]["summary"]
    # Everything else replay printed is what it prints without the bug, in the same order.
    assert [m for m in lines if m not in failures] == [
        orjson.loads(line) for line in plain.stdout.splitlines()
    ]
    assert any(m.get("action") == "pause" for m in lines)  # the shadow guard still acts
    assert "guard canary failed on home-ranker" in result.stderr
    assert "Traceback" in result.stderr
    errors = re.search(r"verdicts \((\d+) guard errors\)", result.stderr)
    assert errors is not None
    assert int(errors[1]) > 10
    assert "(0 guard errors)" in plain.stderr
