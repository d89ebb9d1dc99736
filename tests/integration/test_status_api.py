"""The worker's status API, and the Argo Rollouts and Flagger contracts, over real HTTP."""

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streamguard.broker import EmbeddedBroker
from streamguard.sim import ShadowDeviation
from streamguard.testing import WorkerProcess
from tests.integration.conftest import produce
from tests.integration.test_worker_shadow import (
    PREDICTIONS,
    SPECS,
    TARGET,
    commands,
    start_ts,
    traffic,
)

pytestmark = pytest.mark.integration


def call(port: int, path: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        headers={"Content-Type": "application/json"},
        method="GET" if data is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback http
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def until(port: int, path: str, check: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        _, body = call(port, path)
        if check(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def healthy_verdict(deployment: str) -> bytes:
    end = start_ts() + 600
    return json.dumps(
        {
            "schema_version": 1,
            "kind": "verdict",
            "deployment": deployment,
            "guard": "shadow",
            "model_version": "s2",
            "baseline_version": "s1",
            "window_start": end - 10,
            "window_end": end,
            "horizon_start": end - 300,
            "slices": [{"slice": "*", "n": 900, "state": "ok", "stats": {"psi": 0.01}}],
            "findings": [],
        }
    ).encode()


def test_status_judgement_and_webhooks_follow_the_decisions(
    broker_with_topics: EmbeddedBroker, tmp_path: Path
) -> None:
    worker = WorkerProcess(broker_with_topics.url, tmp_path / "w.log").start()
    try:
        worker.wait_ready(sources=8)
        port = worker.web_port
        assert call(port, "/judgement/home-ranker/")[1]["judgement"] == "pending"
        produce(
            broker_with_topics.bootstrap,
            traffic(ShadowDeviation(TARGET, after_s=150, shift=0.08)),  # a pause, no rollback
            PREDICTIONS.name,
        )
        produce(
            broker_with_topics.bootstrap,
            [(None, b"search", healthy_verdict("search"))],
            SPECS["verdicts"].name,
        )
        pause = commands(broker_with_topics, 60, expect=1)[0]
        judged = until(port, "/judgement/home-ranker/", lambda b: b["judgement"] == "paused")
        assert judged["judgement"] == "paused"  # what Argo's failureCondition matches
        assert not judged["healthy"]
        assert judged["caught_up"]
        paused = pause["model_version"]
        assert call(port, f"/judgement/home-ranker/?version={paused}")[1]["judgement"] == "paused"
        other = call(port, f"/judgement/home-ranker/?version={paused}x")[1]
        assert other["judgement"] == "pending"  # never judged: inconclusive, not healthy
        assert not other["healthy"]

        code, overview = call(port, "/status")
        assert code == 200
        assert overview["deployments"]["home-ranker"] == "paused"
        assert overview["deployments"]["search"] == "healthy"
        assert [p["command_id"] for p in overview["pending_approvals"]] == [pause["command_id"]]
        detail = call(port, "/status/home-ranker/")[1]
        shadow = detail["verdicts"]["shadow"]
        assert shadow["slices"]
        assert {s["slice"] for s in shadow["slices"]} >= {"*"}
        assert detail["pending_approvals"][0]["slice"] == ",".join(
            f"{k}={TARGET[k]}" for k in sorted(TARGET)
        )
        assert detail["current_versions"] == [paused]
        own = call(port, f"/status/home-ranker/?version={paused}")[1]
        assert own["verdicts"]["shadow"]["model_version"] == paused
        assert [r["command_id"] for r in own["pending_approvals"]] == [pause["command_id"]]
        unknown_version = call(port, f"/status/home-ranker/?version={paused}x")[1]
        assert (unknown_version["verdicts"], unknown_version["rollouts"]) == ({}, [])
        assert unknown_version["judgement"] == "pending"

        flagger = {"name": "home-ranker", "namespace": "prod", "phase": "Progressing"}
        code, body = call(port, "/flagger/rollback/", flagger)
        assert (code, body["rollback"]) == (200, True)  # Flagger fails the canary on 2xx
        code, body = call(port, "/flagger/confirm-promotion/", flagger)
        assert (code, body["promote"]) == (403, False)

        search = {
            "name": "search-canary",
            "namespace": "prod",
            "metadata": {"deployment": "search"},
        }
        assert call(port, "/flagger/confirm-promotion/", search)[0] == 200
        assert call(port, "/flagger/rollback/", search)[0] == 409
        assert call(port, "/judgement/search/?version=s2")[1]["judgement"] == "healthy"
        assert call(port, "/judgement/search/?version=s3")[1]["judgement"] == "pending"
        for version, promote in (("s2", 200), ("s3", 403)):  # s3: deployed, never judged
            versioned = {**search, "metadata": {"deployment": "search", "model_version": version}}
            code, body = call(port, "/flagger/confirm-promotion/", versioned)
            assert (code, body["version"]) == (promote, version)
            assert call(port, "/flagger/rollback/", versioned)[0] == 409
        unknown = {"name": "never-seen", "namespace": "prod"}
        assert call(port, "/flagger/confirm-promotion/", unknown)[0] == 403  # pending: wait
        assert call(port, "/judgement/never-seen/")[1]["judgement"] == "pending"
    finally:
        worker.stop()
