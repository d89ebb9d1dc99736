"""``streamguard replay``: alert-only findings are printed too, next to commands."""

import os
import re
from pathlib import Path

import jsonschema
import orjson

from streamguard.contracts import load_schema
from streamguard.engine import Pipeline
from streamguard.policy import Policy
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
    inject = Path(__file__).parents[2] / "faults" / "inject"
    path = os.pathsep.join(filter(None, [str(inject), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "STREAMGUARD_TEST_RAISE_IN": f"event:{poison}"}
    result = streamguard("replay", str(recording), "--no-progress", env=env)
    assert_one_error_line(result, 4, "line 7: accounting predictions partition ")
    assert f"raised RuntimeError: injected: event:{poison}" in result.stderr
    assert result.stdout == ""  # nothing was decided before line 7
