"""``streamguard simulate``: scenarios that replay to what they promise, and plain errors."""

from pathlib import Path

import orjson
import pytest

from streamguard.contracts import decode_message
from streamguard.engine import Pipeline
from streamguard.policy import Policy
from streamguard.sim.scenarios import SCENARIOS
from tests.unit.cli.test_errors import assert_one_error_line, streamguard

START = 1_790_000_000.0


def replay(path: Path) -> list[dict]:
    pipe = Pipeline(Policy(), 8)
    for line in path.read_bytes().splitlines():
        pipe.feed(line)
    pipe.finish()
    return [c.to_dict() for c in pipe.commands if c.action != "schemas"]


def simulate(tmp_path: Path, scenario: str, rate: int, duration: int) -> Path:
    out = tmp_path / f"{scenario}.jsonl"
    result = streamguard(
        "simulate", "--scenario", scenario, "--rate", str(rate), "--duration", str(duration),
        "--seed", "1", "--start-ts", str(START), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr
    return out


@pytest.mark.parametrize(
    "name",
    [
        "shadow-deviation",
        "contaminated-canary",
        "popularity-loop",
        "popularity-slice",
        "schema-rollback",
        "cold-start",
        "training-leakage",
    ],
)
def test_a_failure_scenario_is_caught_by_its_guard_naming_its_slice(
    tmp_path: Path, name: str
) -> None:
    scenario = SCENARIOS[name]
    commands = replay(simulate(tmp_path, name, 200, 300))
    assert commands, f"{name}: nothing caught"
    first = commands[0]
    assert {c["guard"] for c in commands} == {scenario.guard}
    labels = [",".join(f"{k}={v}" for k, v in sorted((c["slice"] or {}).items())) or "*"
              for c in commands if c["ts"] == first["ts"]]  # fmt: skip
    assert any(scenario.names(label) for label in labels), labels  # cold start: "*" and replicas
    onset = scenario.onset_s(300)
    assert onset is not None
    if name == "training-leakage":  # a block is stamped with its example's label time
        leaky_run = "ctr-trainer-ex-1000004-"  # the backfill's examples, not the clean run's
        assert first["evidence"]["first_violation"]["example_id"].startswith(leaky_run)
    else:
        assert first["ts"] >= START + onset  # never before the failure starts


@pytest.mark.parametrize("name", ["healthy", "healthy-many-slices", "healthy-scale-out"])
def test_healthy_scenarios_get_no_command(tmp_path: Path, name: str) -> None:
    path = simulate(tmp_path, name, 200, 300)
    assert replay(path) == []
    if name == "healthy-many-slices":
        defined = SCENARIOS[name].source(200, 300, 1, START).slices
        assert len(defined) == 1000
        seen = {
            tuple(sorted(e["slice"].items()))
            for line in path.read_bytes().splitlines()
            for e in orjson.loads(line)["events"]
            if e["kind"] == "prediction"
        }
        assert len(seen) >= 950  # the rarest slices get a request every few minutes


def test_the_file_holds_valid_envelopes_routed_like_the_emitter(tmp_path: Path) -> None:
    path = simulate(tmp_path, "healthy", 50, 20)
    for line in path.read_bytes().splitlines():
        decoded = decode_message(line)
        assert not decoded.rejected


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--scenario", "nope", "--out", "x.jsonl"], "unknown scenario 'nope'"),
        (["--scenario", "healthy", "--rate", "0", "--out", "x.jsonl"], "--rate"),
        (["--scenario", "healthy", "--duration", "0", "--out", "x.jsonl"], "--duration"),
        (["--scenario", "healthy"], "one of the arguments --broker --out is required"),
        (["--scenario", "healthy", "--out", "/nonexistent/dir/x.jsonl"], "cannot write"),
    ],
)
def test_bad_arguments_give_one_plain_line(args: list[str], fragment: str) -> None:
    assert_one_error_line(
        streamguard("simulate", *args), 2 if "write" not in fragment else 3, fragment
    )
