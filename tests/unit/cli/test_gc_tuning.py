"""The worker's collector settings (``tune_gc``), each checked in a fresh interpreter: the
collector is process-wide state that a test must not leave changed for the others."""

import json
import subprocess
import sys
from typing import Any

import pytest

from streamguard.settings import Settings

PROBE = """
import gc, json, sys
from streamguard.cli.gc_tuning import tune_gc
before = gc.get_threshold()
kept = [[i] for i in range(1000)]  # alive now: frozen with the rest
cycle = []; cycle.append(cycle); del cycle  # garbage now: collected, not frozen
tune_gc(int(sys.argv[1]))
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "tracked_kept": any(o is kept for o in gc.get_objects())}))
"""


def probe(threshold: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(threshold)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_tuning_freezes_startup_objects_and_raises_only_the_young_threshold() -> None:
    result = probe(20_000)
    before = result["before"]
    assert result["after"] == [20_000, before[1], before[2]]
    assert result["frozen"] > 1000  # the modules' objects and ``kept``
    # Frozen objects leave the generations the collector walks.
    assert result["tracked_kept"] is False


def test_zero_leaves_the_collector_alone() -> None:
    result = probe(0)
    assert result["after"] == result["before"]
    assert result["frozen"] == 0
    assert result["tracked_kept"] is True


def test_tuning_is_on_by_default_and_off_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STREAMGUARD_GC_YOUNG_THRESHOLD", raising=False)
    assert Settings.from_env().gc_young_threshold == 20_000
    assert Settings().gc_young_threshold == 20_000
    monkeypatch.setenv("STREAMGUARD_GC_YOUNG_THRESHOLD", "0")
    assert Settings.from_env().gc_young_threshold == 0
