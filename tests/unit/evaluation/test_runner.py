"""Evaluation runs: scenarios through streamguard and the judges, and the report's arithmetic."""

import math

import pytest

from streamguard.evaluation import JudgeRun, RunResult, run
from streamguard.evaluation.report import summarise, to_json, to_markdown
from streamguard.evaluation.runner import onset_phase


@pytest.fixture(scope="module")
def rollback_run() -> RunResult:
    return run("schema-rollback", 1, rate=200, duration=240)


def test_a_failure_is_caught_after_its_onset_by_streamguard_and_the_judges(
    rollback_run: RunResult,
) -> None:
    onset = 80 + onset_phase("schema-rollback", 1)  # a third of 240 s, plus the run's phase
    assert rollback_run.onset_s == onset
    mine = rollback_run.judges["streamguard"]
    assert mine.detected
    assert mine.finding == "canary"
    assert mine.action == "rollback"
    assert mine.slice == "*"
    assert mine.slice_named
    assert mine.delay_s is not None
    assert 0 < mine.delay_s < 160
    assert mine.false_commands == 0
    for judge in ("global-threshold", "kayenta"):
        theirs = rollback_run.judges[judge]
        assert theirs.detected, theirs
        assert theirs.finding == "errors"
        # They judge once a minute: their first chance is the first whole minute after the onset.
        assert theirs.delay_s is not None
        assert theirs.delay_s >= 60 * math.floor(onset / 60 + 1) - onset


def test_the_leakage_block_is_timed_by_when_it_was_issued() -> None:
    result = run("training-leakage", 2, rate=50, duration=120)
    mine = result.judges["streamguard"]
    assert mine.detected
    assert mine.action == "block"
    assert mine.finding == "leakage"
    assert mine.delay_s is not None
    assert 0 < mine.delay_s <= 5
    assert result.judges["kayenta"].applicable  # it compares the shadow, and sees nothing
    assert not result.judges["kayenta"].detected


def _result(name: str, onset: float | None, **judges: JudgeRun) -> RunResult:
    return RunResult(name, 1, 600.0, onset, 600.0 if onset is None else onset, judges)


def test_the_summary_counts_detections_delays_and_false_commands_per_day() -> None:
    runs = [
        _result(
            "slice-regression",
            200.0,
            streamguard=JudgeRun(
                "streamguard", True, 30.0, "canary", "platform=web", True, "rollback"
            ),
            kayenta=JudgeRun("kayenta", True, 100.0, "ctr", "*", False, "rollback"),
            **{"global-threshold": JudgeRun("global-threshold", false_commands=1)},
        ),
        _result(
            "slice-regression",
            200.0,
            streamguard=JudgeRun(
                "streamguard", True, 50.0, "canary", "platform=web", True, "rollback"
            ),
            kayenta=JudgeRun("kayenta"),
            **{"global-threshold": JudgeRun("global-threshold")},
        ),
        _result(
            "healthy",
            None,
            streamguard=JudgeRun("streamguard", false_commands=2),
            kayenta=JudgeRun("kayenta"),
            **{"global-threshold": JudgeRun("global-threshold", applicable=True)},
        ),
    ]
    summary = summarise(runs, rate=300.0)
    cell = summary.cells["slice-regression"]["streamguard"]
    assert (cell.runs, cell.detected, cell.slice_named, cell.median_delay_s) == (2, 2, 2, 40.0)
    assert summary.cells["slice-regression"]["kayenta"].detected == 1
    healthy_s = 200.0 + 200.0 + 600.0
    assert summary.false_alarms["streamguard"].per_day == pytest.approx(2 / healthy_s * 86400)
    assert summary.false_alarms["global-threshold"].runs_with_any == 1
    text = to_markdown(summary, "streamguard evaluate --seeds=2")
    assert "| slice-regression | `platform=web` | 2/2, 40 s [30-50], slice 2/2, rollback |" in text
    assert "missed (0/2)" in text  # the global judge
    assert "`streamguard evaluate --seeds=2`" in text
    data = to_json(summary)
    assert data["cells"]["slice-regression"]["streamguard"]["median_delay_s"] == 40.0
    assert data["false_alarms"]["streamguard"]["per_day"] == pytest.approx(172.8)


def test_an_alert_without_a_command_counts_as_a_finding() -> None:
    # The determinism guard only alerts: the model is not at fault, its environment is.
    result = run("nondeterministic-env", 1, rate=100, duration=180)
    mine = result.judges["streamguard"]
    assert mine.detected
    assert (mine.finding, mine.action, mine.slice) == ("determinism", "alert", "*")
    assert mine.false_commands == 0
    # A Kayenta-style judge sees the shadow's scores move and would roll the model back.
    kayenta = result.judges["kayenta"]
    assert not kayenta.detected or kayenta.action == "rollback"


@pytest.mark.parametrize("k", [0, 1, 2, 5, 30])
def test_the_false_alarm_upper_bound_is_garwoods(k: int) -> None:
    from scipy import stats

    from streamguard.evaluation.report import poisson_upper

    assert poisson_upper(k) == pytest.approx(stats.chi2.ppf(0.95, 2 * k + 2) / 2, rel=1e-9)
