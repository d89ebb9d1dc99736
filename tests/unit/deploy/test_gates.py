"""Argo's and Flagger's gates read streamguard's judgements as the status view means them."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamguard.decisions.status import JUDGEMENTS
from streamguard.faust_app.web import _deployment_of

ROOT = Path(__file__).resolve().parents[3]


def matched(condition: str) -> set[str]:
    """The judgements an Argo condition of ``result == "x" || ...`` clauses accepts."""
    clauses = [c.strip() for c in condition.split("||")]
    words = [re.fullmatch(r'result == "([a-z_]+)"', c) for c in clauses]
    assert all(words), condition  # anything else would need a real expression evaluator
    return {w.group(1) for w in words if w}


def test_argo_passes_healthy_fails_decisions_and_leaves_pending_inconclusive() -> None:
    template = yaml.safe_load((ROOT / "deploy" / "argo" / "analysistemplate.yaml").read_text())
    (metric,) = template["spec"]["metrics"]
    success, failure = matched(metric["successCondition"]), matched(metric["failureCondition"])
    assert success == {"healthy"}
    assert failure == {"paused", "rolled_back"}
    # Neither condition: Argo counts the measurement inconclusive, which never promotes.
    assert set(JUDGEMENTS) - success - failure == {"pending"}
    assert metric["inconclusiveLimit"] >= 1  # pending while the canary warms up is expected
    assert "?version={{args.canary-version}}" in metric["provider"]["web"]["url"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"name": "c", "metadata": {"deployment": "d", "model_version": "v3"}}, ("d", "v3")),
        ({"name": "c", "metadata": {"deployment": "d"}}, ("d", None)),
        ({"name": "c", "metadata": {"model_version": ""}}, ("c", None)),
        ({"name": "c", "metadata": "not a map"}, ("c", None)),
        ({"namespace": "prod"}, (None, None)),
        (["not", "a", "payload"], (None, None)),
    ],
)
def test_the_flagger_payload_names_the_deployment_and_the_version(
    payload: Any, expected: tuple[str | None, str | None]
) -> None:
    assert _deployment_of(payload) == expected
