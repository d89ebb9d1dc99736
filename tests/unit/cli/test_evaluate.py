"""``streamguard evaluate``: a report side by side, and plain errors."""

from pathlib import Path

import orjson
import pytest

from tests.unit.cli.test_errors import assert_one_error_line, streamguard


def test_a_small_evaluation_writes_the_report_and_its_numbers(tmp_path: Path) -> None:
    out, numbers = tmp_path / "report.md", tmp_path / "report.json"
    result = streamguard(
        "evaluate", "--scenario", "schema-rollback", "--scenario", "healthy-scale-out",
        "--seeds", "2", "--rate", "150", "--duration", "180", "--jobs", "2",
        "--out", str(out), "--json", str(numbers),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "schema-rollback seed 2: streamguard: caught" in result.stderr
    text = out.read_text()
    assert "| scenario | failure in | streamguard | global threshold | Kayenta-style |" in text
    row = next(line for line in text.splitlines() if line.startswith("| schema-rollback |"))
    assert row.count("2/2") >= 1
    assert "rollback" in row
    assert "healthy-scale-out" in text  # named among the healthy traffic
    data = orjson.loads(numbers.read_bytes())
    assert data["seeds"] == [1, 2]
    assert data["cells"]["schema-rollback"]["streamguard"]["detected"] == 2
    assert data["false_alarms"]["streamguard"]["healthy_s"] == 2 * 180 + 2 * 60


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
