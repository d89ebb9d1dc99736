"""``streamguard evaluate``: a report side by side, and plain errors."""

from pathlib import Path

import orjson
import pytest

from streamguard.cli.main import main
from streamguard.evaluation.runner import onset_phase
from tests.unit.cli.test_errors import assert_one_error_line, streamguard


def test_a_small_evaluation_writes_the_report_and_its_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, numbers, runs = tmp_path / "report.md", tmp_path / "report.json", tmp_path / "runs.jsonl"
    args = [
        "evaluate", "--scenario", "schema-rollback", "--scenario", "healthy-scale-out",
        "--seeds", "2", "--rate", "150", "--duration", "180", "--jobs", "2",
        "--out", str(out), "--json", str(numbers), "--runs", str(runs),
    ]  # fmt: skip
    assert main(args) == 0  # in process: a subprocess's time limit would be the test's limit
    stderr = capsys.readouterr().err
    assert len(runs.read_bytes().splitlines()) == 4
    assert "schema-rollback seed 2: streamguard: caught" in stderr
    text = out.read_text()
    assert "| scenario | failure in | streamguard | global threshold | Kayenta-style |" in text
    row = next(line for line in text.splitlines() if line.startswith("| schema-rollback |"))
    assert row.count("2/2") >= 1
    assert "rollback" in row
    assert "healthy-scale-out" in text  # named among the healthy traffic
    data = orjson.loads(numbers.read_bytes())
    assert data["seeds"] == [1, 2]
    assert data["cells"]["schema-rollback"]["streamguard"]["detected"] == 2
    # Healthy time: both healthy-scale-out runs, and schema-rollback up to each run's onset.
    onsets = sum(60 + onset_phase("schema-rollback", seed) for seed in (1, 2))
    assert data["false_alarms"]["streamguard"]["healthy_s"] == 2 * 180 + onsets
    # Again with the runs file: nothing is re-run, and the report is the same.
    assert main(args) == 0
    stderr = capsys.readouterr().err
    assert "reusing 4 finished runs" in stderr
    assert "seed 1:" not in stderr
    assert orjson.loads(numbers.read_bytes()) == data
    assert len(runs.read_bytes().splitlines()) == 4


def test_a_corrupt_runs_file_is_one_error_line(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    runs.write_text('{"rate": 1}\n')
    result = streamguard("evaluate", "--scenario", "healthy", "--runs", str(runs))
    assert_one_error_line(result, 3, "runs.jsonl:1: not a run record")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--scenario", "nope"], "unknown scenario 'nope'"),
        (["--seeds", "0"], "--seeds must be 1 to 100"),
        (["--rate", "0"], "--rate must be 1 to 100,000"),
        (["--duration", "5"], "--duration must be 60 s to one day"),
        (["--jobs", "0"], "--jobs must be 1 to 64"),
        (["--out", "/nonexistent-dir/report.md"], "cannot write /nonexistent-dir/report.md"),
        (["--seeds", "x"], "invalid int value"),
    ],
)
def test_bad_arguments_are_one_error_line(args: list[str], fragment: str) -> None:
    assert_one_error_line(streamguard("evaluate", *args), 2 if "cannot" not in fragment else 3,
                          fragment)  # fmt: skip
