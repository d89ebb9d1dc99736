"""The deployment files hold together: compose, Kubernetes manifests, Prometheus rules."""

import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from streamguard.faust_app.metrics import Metrics
from streamguard.policy import Policy, parse_policy

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
COMPOSE = ROOT / "docker-compose.yml"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def by_kind() -> dict[str, dict[str, Any]]:
    kustomization = load(K8S / "kustomization.yaml")
    docs = [load(K8S / name) for name in kustomization["resources"]]
    return {doc["kind"]: doc for doc in docs}


def compose_services() -> dict[str, dict[str, Any]]:
    return load(COMPOSE)["services"]


def published(service: dict[str, Any]) -> dict[int, int]:
    """A compose service's published ports: host port -> container port."""
    ports = {}
    for mapping in service.get("ports", []):
        *_, host, container = str(mapping).split(":")
        ports[int(host)] = int(container)
    return ports


def bind_mounts(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """A compose service's bind mounts: container path -> (repository path, read-only)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        if source.startswith((".", "/")):  # not a named volume
            mounts[target] = ((ROOT / source).resolve(), mode == ["ro"])
    return mounts


def listeners(spec: str) -> dict[str, tuple[str, int]]:
    """Kafka's ``NAME://host:port,...`` listener list: name -> (host, port)."""
    parsed = {}
    for listener in spec.split(","):
        name, address = listener.split("://")
        host, port = address.rsplit(":", 1)
        parsed[name] = (host, int(port))
    return parsed


def worker_web_port(worker: dict[str, Any]) -> int:
    """The port a compose worker serves /metrics on inside its container."""
    from streamguard.settings import Settings

    command = worker["command"]
    if "--web-port" in command:
        return int(command[command.index("--web-port") + 1])
    return int(worker.get("environment", {}).get("STREAMGUARD_WEB_PORT", Settings().web_port))


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


def test_compose_kafka_advertises_its_service_name_inside_and_localhost_outside() -> None:
    services = compose_services()
    kafka = services["kafka"]
    env = kafka["environment"]
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(bound) <= set(protocols)
    for name, (_, port) in advertised.items():  # advertised where the broker listens
        assert bound[name][1] == port, name
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller not in advertised
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == (
        f"{env['KAFKA_NODE_ID']}@{kafka['hostname']}:{bound[controller][1]}"
    )
    # Containers: the inter-broker listener, under the service's name, on 19092.
    inside_name = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    inside = advertised[inside_name]
    assert inside == (kafka["hostname"], 19092)
    assert kafka["hostname"] == "kafka"
    assert "kafka" in services
    brokers = {
        s["command"][s["command"].index("--broker") + 1]
        for s in services.values()
        if "--broker" in s.get("command", [])
    }
    assert brokers == {"kafka:19092"}  # topics, both workers and the simulator
    # The host: the other listener, localhost on 9092, published on the same port.
    (outside_name,) = set(advertised) - {inside_name}
    assert advertised[outside_name] == ("localhost", 9092)
    assert published(kafka) == {9092: bound[outside_name][1]}
    assert "localhost:9092" in " ".join(kafka["healthcheck"]["test"])


def test_compose_prometheus_scrapes_each_worker_on_its_metrics_port_with_the_rules() -> None:
    services = compose_services()
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:v")
    assert published(prometheus) == {9090: 9090}
    mounts = bind_mounts(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == (PROMETHEUS / "prometheus.yml", True)
    config = load(PROMETHEUS / "prometheus.yml")
    for rule_file in config["rule_files"]:  # loaded from where compose mounts them
        assert mounts[rule_file] == (PROMETHEUS / Path(rule_file).name, True)
    assert [Path(f).name for f in config["rule_files"]] == ["streamguard-rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    workers = {name: services[name] for name in services if name.startswith("worker-")}
    assert sorted(targets) == sorted(f"{name}:{worker_web_port(w)}" for name, w in workers.items())
    assert all(worker_web_port(w) == 6066 for w in workers.values())
    host_ports = set()
    for worker in workers.values():  # each worker's /metrics also on its own host port
        assert list(published(worker).values()) == [worker_web_port(worker)]
        host_ports.update(published(worker))
    assert host_ports == {6066, 6067}
    assert set(prometheus["depends_on"]) == set(workers)


def test_compose_grafana_shows_the_dashboard_on_the_compose_prometheus() -> None:
    services = compose_services()
    grafana = services["grafana"]
    image, tag = grafana["image"].split(":")
    assert image == "grafana/grafana"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag)  # pinned, not latest
    assert published(grafana) == {3000: 3000}
    assert "prometheus" in grafana["depends_on"]
    mounts = bind_mounts(grafana)
    for target, (source, read_only) in mounts.items():
        assert source.exists(), source
        assert read_only, target

    # The data source: the compose Prometheus, by service name and its container port.
    (datasource,) = [
        d
        for f in sorted(mounts["/etc/grafana/provisioning/datasources"][0].glob("*.yml"))
        for d in load(f)["datasources"]
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["access"] == "proxy"  # Grafana's server reaches it, not the browser
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus"
    assert url.hostname in services
    assert url.port in published(services["prometheus"]).values()

    # The dashboard provider loads the mounted deploy/grafana/streamguard.json, and only it.
    (provider,) = [
        p
        for f in sorted(mounts["/etc/grafana/provisioning/dashboards"][0].glob("*.yml"))
        for p in load(f)["providers"]
    ]
    assert provider["type"] == "file"
    folder = PurePosixPath(provider["options"]["path"])
    dashboards = {t: s for t, (s, _) in mounts.items() if PurePosixPath(t).parent == folder}
    assert dashboards == {str(folder / "streamguard.json"): GRAFANA / "streamguard.json"}
    env = grafana["environment"]
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in dashboards
    if str(env.get("GF_AUTH_ANONYMOUS_ENABLED")).lower() == "true":
        assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"  # anonymous visitors only look

    # Every panel resolves to that data source without a manual import.
    dashboard = json.loads((GRAFANA / "streamguard.json").read_text())
    assert "__inputs" not in dashboard  # an export's ${DS_...} inputs are not provisionable
    variables = {v["name"]: v for v in dashboard["templating"]["list"] if v["type"] == "datasource"}
    for panel in dashboard["panels"]:
        ref = panel["datasource"]
        assert ref["type"] == datasource["type"], panel["title"]
        if match := re.fullmatch(r"\$\{(\w+)\}", ref["uid"]):
            variable = variables[match.group(1)]
            assert variable["query"] == datasource["type"], panel["title"]
            current = variable.get("current", {}).get("value")
            if current:
                assert current in (datasource["uid"], datasource["name"]), panel["title"]
            else:  # a variable without a value takes the default data source of its type
                assert datasource["isDefault"] is True
        else:
            assert ref["uid"] == datasource["uid"], panel["title"]


def test_the_operate_section_names_the_ports_compose_publishes() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Operate it\n", 1)[1].split("\n## ", 1)[0]
    services = compose_services()
    host_ports = {port for service in services.values() for port in published(service)}
    named = {int(port) for port in re.findall(r"localhost:(\d+)", section)}
    assert named <= host_ports
    assert set(published(services["grafana"])) <= named  # the walk-through reaches Grafana
