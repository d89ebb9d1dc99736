"""The deployment files hold together: compose, Kubernetes manifests, Prometheus rules."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamguard.faust_app.metrics import Metrics
from streamguard.policy import Policy, parse_policy

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def by_kind() -> dict[str, dict[str, Any]]:
    kustomization = load(K8S / "kustomization.yaml")
    docs = [load(K8S / name) for name in kustomization["resources"]]
    return {doc["kind"]: doc for doc in docs}


def exported_metric_names() -> set[str]:
    """Base names of the worker's metrics (a counter's samples add ``_total``)."""
    return {family.name for family in Metrics().registry.collect()}


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(load(K8S / "kustomization.yaml")["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


def test_the_deployment_probes_readiness_and_liveness_mounts_the_key_and_the_policy() -> None:
    kinds = by_kind()
    deployment, configmap = kinds["Deployment"], kinds["ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    # 503 while recovering or the broker is down; alive meanwhile, so not restarted for it.
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/live"
    probes = ("readinessProbe", "livenessProbe", "startupProbe")
    assert {container[p]["httpGet"]["port"] for p in probes} == {container["ports"][0]["name"]}
    port = container["ports"][0]["containerPort"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STREAMGUARD_WEB_PORT"] == str(port)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["STREAMGUARD_SIGNING_KEY"].startswith(mounts["keys"] + "/")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes["keys"]["secret"]["secretName"]
        == load(K8S / "secret.example.yaml")["metadata"]["name"]
    )
    policy_arg = container["args"][container["args"].index("--policy") + 1]
    assert policy_arg.startswith(mounts["policy"] + "/")
    assert volumes["policy"]["configMap"]["name"] == configmap["metadata"]["name"]
    parse_policy(configmap["data"]["policy.toml"])  # the shipped policy is valid
    assert "--insecure" not in container["args"]
    assert container["resources"]["requests"]["memory"]


def test_the_probed_paths_are_routes_the_worker_serves() -> None:
    from streamguard.faust_app.app import create_app
    from streamguard.settings import Settings

    # Building the app connects to nothing; the routes are registered on its web server.
    worker = create_app(Settings(broker="kafka://127.0.0.1:9", insecure=True), Policy())
    routes = set(worker.app.web.views)
    container = by_kind()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in routes, probe


def test_service_and_podmonitor_select_the_worker_pods() -> None:
    kinds = by_kind()
    labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert kinds["Service"]["spec"]["selector"].items() <= labels.items()
    monitor = kinds["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_the_operator_rules_equal_the_promtool_tested_rules() -> None:
    rule = by_kind()["PrometheusRule"]
    assert rule["spec"]["groups"] == load(PROMETHEUS / "streamguard-rules.yml")["groups"]


def test_alert_rules_only_use_metrics_the_worker_exports() -> None:
    exported = exported_metric_names()
    for group in load(PROMETHEUS / "streamguard-rules.yml")["groups"]:
        for rule in group["rules"]:
            used = set(re.findall(r"streamguard_[a-z_]+", rule["expr"]))
            # Counters are exported as NAME_total; the TYPE line names the base.
            assert {re.sub(r"_total$", "", name) for name in used} <= exported, rule["alert"]


def test_promtool_checks_and_tests_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool is not installed and could not be (make test installs Debian's "
            "prometheus package where apt is available)"
        )
    for args in (
        ["check", "rules", "streamguard-rules.yml"],
        ["test", "rules", "streamguard-rules.test.yml"],
    ):
        result = subprocess.run(
            [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_kraft_kafka_topics_keys_and_two_signing_workers() -> None:
    compose = load(ROOT / "docker-compose.yml")
    services = compose["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert services["topics"]["command"][:2] == ["topics", "apply"]
    workers = [name for name in services if name.startswith("worker-")]
    assert len(workers) == 2
    ports = set()
    for name in workers:
        worker = {**services["worker-1"], **services[name]}  # YAML merge keys are resolved
        assert worker["environment"]["STREAMGUARD_SIGNING_KEY"].startswith("/keys/")
        assert {"keys", "topics"} <= set(worker["depends_on"])
        assert "--insecure" not in worker["command"]
        ports.update(worker["ports"])
    assert len(ports) == 2  # each worker's /metrics on its own host port
    assert "keys" in compose["volumes"]


def test_compose_simulator_runs_a_known_scenario_against_the_compose_broker() -> None:
    from streamguard.cli.main import build_parser
    from streamguard.sim.scenarios import SCENARIOS

    services = load(ROOT / "docker-compose.yml")["services"]
    simulator = services["simulator"]
    args = build_parser().parse_args(simulator["command"])  # the command line the CLI accepts
    assert args.command == "simulate"
    assert args.scenario in SCENARIOS
    assert SCENARIOS[args.scenario].guard is not None  # something for the workers to catch
    assert args.broker == services["topics"]["command"][-1]  # the broker the topics went to
    assert args.realtime
    assert simulator["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_the_grafana_dashboard_plots_only_exported_metrics() -> None:
    import json

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "streamguard.json").read_text())
    exported = exported_metric_names()
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == len(set(titles))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = set(re.findall(r"streamguard_[a-z_]+", target["expr"]))
            bases = {re.sub(r"_(total|sum|count|bucket)$", "", name) for name in used}
            assert bases <= exported, panel["title"]


def test_the_argo_template_reads_the_judgement_route() -> None:
    template = load(ROOT / "deploy" / "argo" / "analysistemplate.yaml")
    (metric,) = template["spec"]["metrics"]
    web = metric["provider"]["web"]
    assert "/judgement/{{args.deployment}}/" in web["url"]
    assert web["jsonPath"] == "{$.judgement}"
    assert metric["successCondition"] == 'result == "healthy"'
    for judgement in ("paused", "rolled_back"):
        assert f'"{judgement}"' in metric["failureCondition"]
    assert "pending" not in metric["failureCondition"]  # no verdict yet is inconclusive
    rollout = load(ROOT / "deploy" / "argo" / "rollout-example.yaml")
    analysis = rollout["spec"]["strategy"]["canary"]["analysis"]
    assert analysis["templates"][0]["templateName"] == template["metadata"]["name"]
    assert {a["name"] for a in analysis["args"]} == {a["name"] for a in template["spec"]["args"]}


def test_the_flagger_canary_uses_both_webhooks() -> None:
    canary = load(ROOT / "deploy" / "flagger" / "canary.yaml")
    hooks = {h["type"]: h for h in canary["spec"]["analysis"]["webhooks"]}
    assert hooks["confirm-promotion"]["url"].endswith("/flagger/confirm-promotion/")
    assert hooks["rollback"]["url"].endswith("/flagger/rollback/")
    assert all(h["metadata"]["deployment"] for h in hooks.values())


def test_compose_prometheus_scrapes_both_workers_with_the_rules() -> None:
    compose = load(ROOT / "docker-compose.yml")
    config = load(PROMETHEUS / "prometheus.yml")
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    workers = {name for name in compose["services"] if name.startswith("worker-")}
    assert {t.split(":")[0] for t in targets} == workers
    assert all(t.endswith(":6066") for t in targets)  # the port the workers listen on inside
    mounts = compose["services"]["prometheus"]["volumes"]
    assert any(m.startswith("./deploy/prometheus/streamguard-rules.yml:") for m in mounts)
    assert [Path(f).name for f in config["rule_files"]] == ["streamguard-rules.yml"]
