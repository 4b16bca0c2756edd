"""deploy/kubernetes: every manifest valid under Kubernetes' own schemas (strict: an unknown field
fails), and the rules the deployment relies on. Offline: no cluster, no container engine;
`make container-test` plays the Deployment and the Job's pod with podman.

Each rule is a function of the manifests, and test_each_rule_can_fail breaks a copy of them in a
way the rule must catch.
"""

import ast
import re
import secrets
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_validate.utils import ValidationError, validate

from bookshelf.config import (
    Config,
    ConfigError,
    check_production_secrets,
    from_environment,
)

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(path for path in KUBERNETES.glob("*.yaml") if path.name != "kustomization.yaml")
# The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# `bookshelf serve` exits within this many seconds of SIGTERM (its drain, then a second to close).
SERVER_STOP_SECONDS = 10
# A serving process's measured peak with PASSWORD_HASH_SLOTS=2 (README "Hardening", Memory), and
# the margin the memory limit keeps above it.
MEMORY_PEAK_MIB = 120
MEMORY_MARGIN = 1.5
# The image's user (Dockerfile: USER 10001:10001).
IMAGE_UID = 10001
# What the kubelet's probes send as Host: the pod's address and port.
KUBELET_HOST = "10.244.1.7:8000"


def load() -> dict[str, dict]:
    """The manifests by kind (each kind appears once), kustomization.yaml's included."""
    manifests = {}
    for path in KUBERNETES.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in manifests, f"a second {document['kind']} in {path.name}"
            manifests[document["kind"]] = document
    return manifests


@pytest.fixture
def manifests():
    return load()


def api(manifests) -> dict:
    return manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def migration(manifests) -> dict:
    return manifests["Job"]["spec"]["template"]["spec"]["containers"][0]


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(Mi|Gi|M|G)?", quantity).groups()
    factor = {"Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20, None: 1 / 2**20}[unit]
    return float(number) * factor


def port_number(container: dict, port: int | str) -> int:
    """A probe's or a Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"no container port is named {port!r}"
    return named[port]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# Kubernetes' schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_the_manifest_follows_the_kubernetes_schema(path, version):
    for document in yaml.safe_load_all(path.read_text()):
        validate(document, version, strict=True)


def test_the_schema_check_does_catch_mistakes(manifests):
    probe = api(manifests)["readinessProbe"]
    probe["httpget"] = probe.pop("httpGet")
    with pytest.raises(ValidationError, match="'httpget' was unexpected"):
        validate(manifests["Deployment"], KUBERNETES_VERSIONS[-1], strict=True)


# The rules


def rule_the_deployment_serves_and_migrates_nothing(manifests):
    container = api(manifests)
    assert container["command"] == ["bookshelf", "serve"], "the server alone"
    assert "args" not in container
    assert manifests["Deployment"]["spec"]["replicas"] == 2


def rule_the_job_migrates_with_the_same_image(manifests):
    job = manifests["Job"]["spec"]
    container = migration(manifests)
    assert container["command"] == ["bookshelf", "init-db"]
    assert container["image"] == api(manifests)["image"], "the image ships its migrations"
    assert job["backoffLimit"] >= 1, "a failed upgrade rolls back: trying again is safe"
    assert job.get("ttlSecondsAfterFinished"), "so that the next release can create it again"
    assert job["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}


def rule_the_probes_call_the_health_endpoints(manifests):
    container = api(manifests)
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/health/ready", "ready: the schema is at head"
    assert liveness["httpGet"]["path"] == "/health", "alive: nothing about the database"
    listening = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}["PORT"]
    for probe in (readiness, liveness):
        assert port_number(container, probe["httpGet"]["port"]) == int(listening)
    assert readiness["timeoutSeconds"] > 2, "readiness waits up to 2 s for the database"


def rule_the_pod_drains_before_sigterm(manifests):
    spec = manifests["Deployment"]["spec"]["template"]["spec"]
    stop = api(manifests).get("lifecycle", {}).get("preStop")
    assert stop, "no preStop: the pod would stop listening while endpoints still send to it"
    if "sleep" in stop:
        pause = stop["sleep"]["seconds"]
    else:
        command = stop["exec"]["command"]
        assert re.fullmatch(r"(/bin/)?sleep", command[0]) and len(command) == 2, command
        pause = int(command[1])
    assert pause >= 3, "time for endpoints to drop the pod before it stops listening"
    grace = spec["terminationGracePeriodSeconds"]
    assert grace >= pause + SERVER_STOP_SECONDS, f"{grace} s < preStop {pause} s + drain"


def rule_selectors_pick_the_api_pods_only(manifests):
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    spec = deployment["spec"]["template"]["spec"]
    job_labels = manifests["Job"]["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": manifests["Service"]["spec"]["selector"],
        "PodDisruptionBudget": manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        "spread": spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector and matches(selector, labels), f"the {kind} misses the API's pods"
        assert not matches(selector, job_labels), f"the {kind} takes in the migration Job's pod"
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bookshelf"}
    assert deployment["metadata"]["name"] == target["name"]
    service_port = manifests["Service"]["spec"]["ports"][0]
    assert port_number(api(manifests), service_port["targetPort"]) == 8000


def rule_availability_survives_drains_and_load(manifests):
    replicas = manifests["Deployment"]["spec"]["replicas"]
    rollout = manifests["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxUnavailable"] == 0, "an old replica stops only once a new one is ready"
    budget = manifests["PodDisruptionBudget"]["spec"]
    assert budget["minAvailable"] == 1 < replicas, "drains proceed, one replica at a time"
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] == replicas and hpa["maxReplicas"] > replicas
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in api(manifests)["resources"]["requests"], "utilization is of the request"


def rule_resources_fit_the_measured_peak(manifests):
    for container in (api(manifests), migration(manifests)):
        resources = container.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        assert {"cpu", "memory"} <= set(requests) and "memory" in limits, container["name"]
        assert mebibytes(requests["memory"]) <= mebibytes(limits["memory"])
    settings = from_environment(manifests["ConfigMap"]["data"])
    hash_mib = settings.get("PASSWORD_HASH_MEMORY_KIB", Config.PASSWORD_HASH_MEMORY_KIB) / 1024
    slots = settings.get("PASSWORD_HASH_SLOTS", Config.PASSWORD_HASH_SLOTS)
    peak = MEMORY_PEAK_MIB + max(0, slots - 2) * hash_mib
    limit = mebibytes(api(manifests)["resources"]["limits"]["memory"])
    assert limit >= peak * MEMORY_MARGIN, f"{limit:.0f} MiB for a {peak:.0f} MiB peak"


def rule_pods_run_unprivileged_on_a_read_only_root(manifests):
    for kind, container in (("Deployment", api(manifests)), ("Job", migration(manifests))):
        spec = manifests[kind]["spec"]["template"]["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == IMAGE_UID, kind
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security["readOnlyRootFilesystem"] is True
        scratch = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get("/tmp") in scratch, f"{kind}: large bodies wait in /tmp"
        assert spec["automountServiceAccountToken"] is False


def rule_the_environment_is_the_apps(manifests):
    configmap, secret = manifests["ConfigMap"], manifests["Secret"]
    for kind, container in (("Deployment", api(manifests)), ("Job", migration(manifests))):
        sources = container["envFrom"]
        assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in sources, kind
        assert {"secretRef": {"name": secret["metadata"]["name"]}} in sources, kind
    # Each variable is one the app reads, with a value it accepts (ConfigError otherwise).
    for data in (configmap["data"], secret["stringData"]):
        assert len(from_environment(data)) == len(data), "a variable the app does not read"
    settings = from_environment(configmap["data"])
    pool, threads = settings["DATABASE_POOL_SIZE"], settings["WAITRESS_THREADS"]
    assert pool >= threads + 2, "a connection for each worker thread and each probe thread"
    env = {e["name"]: e.get("value") for e in api(manifests).get("env", [])}
    assert int(env["PORT"]) == port_number(api(manifests), "http")


def rule_the_secret_holds_placeholders_the_app_refuses(manifests):
    values = manifests["Secret"]["stringData"]
    assert values and all("REPLACE-ME" in value for value in values.values())
    # JWT_SECRET_KEY defaults to SECRET_KEY: applied as it is, the API refuses to start.
    placeholder = values["SECRET_KEY"]
    try:
        check_production_secrets({"SECRET_KEY": placeholder, "JWT_SECRET_KEY": placeholder})
        refusal = ""
    except ConfigError as exc:
        refusal = str(exc)
    assert refusal.startswith("SECRET_KEY"), "the API would start with the placeholder"


def rule_kustomization_applies_all_but_the_secret(manifests):
    kustomization = manifests["Kustomization"]
    expected = {path.name for path in MANIFESTS} - {"secret.yaml"}
    assert sorted(kustomization["resources"]) == sorted(expected)
    images = {image["name"] for image in kustomization["images"]}
    for container in (api(manifests), migration(manifests)):
        assert container["image"].partition(":")[0] in images, "its image is not set by kustomize"


RULES = [value for name, value in dict(globals()).items() if name.startswith("rule_")]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__.removeprefix("rule_"))
def test_rule(rule, manifests):
    rule(manifests)


def set_in(manifests: dict, path: str, value) -> None:
    """Put `value` at `KIND.key.key...` (a number indexes a list, [a.b/c] is one key), or delete
    the key there when `value` is None."""
    keys = [
        int(plain) if plain.isdigit() else (bracketed or plain)
        for bracketed, plain in re.findall(r"\[([^\]]+)\]|([^.\[\]]+)", path)
    ]
    node = manifests
    for key in keys[:-1]:
        node = node[key]
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


POD = "Deployment.spec.template.spec"
API = f"{POD}.containers.0"
JOB = "Job.spec.template.spec.containers.0"
COMPONENT = "[app.kubernetes.io/component]"
BREAKAGES = [
    (rule_the_deployment_serves_and_migrates_nothing, f"{API}.command",
     shlex.split("sh -c 'bookshelf init-db && exec bookshelf serve'")),
    (rule_the_deployment_serves_and_migrates_nothing, "Deployment.spec.replicas", 1),
    (rule_the_job_migrates_with_the_same_image, f"{JOB}.command", ["bookshelf", "serve"]),
    (rule_the_job_migrates_with_the_same_image, f"{JOB}.image", "bookshelf:old"),
    (rule_the_job_migrates_with_the_same_image, "Job.spec.ttlSecondsAfterFinished", None),
    (rule_the_probes_call_the_health_endpoints, f"{API}.readinessProbe.httpGet.path", "/health"),
    (rule_the_probes_call_the_health_endpoints, f"{API}.livenessProbe.httpGet.path",
     "/health/ready"),
    (rule_the_probes_call_the_health_endpoints, f"{API}.livenessProbe.httpGet.port", 8080),
    (rule_the_probes_call_the_health_endpoints, f"{API}.readinessProbe.httpGet.port", "web"),
    (rule_the_pod_drains_before_sigterm, f"{API}.lifecycle", None),
    (rule_the_pod_drains_before_sigterm, f"{API}.lifecycle.preStop.exec.command", ["true"]),
    (rule_the_pod_drains_before_sigterm, f"{POD}.terminationGracePeriodSeconds", 10),
    (rule_selectors_pick_the_api_pods_only, f"Service.spec.selector.{COMPONENT}", "web"),
    (rule_selectors_pick_the_api_pods_only, "PodDisruptionBudget.spec.selector.matchLabels",
     {"app.kubernetes.io/name": "bookshelf"}),
    (rule_selectors_pick_the_api_pods_only, "HorizontalPodAutoscaler.spec.scaleTargetRef.name",
     "bookshelf-api"),
    (rule_selectors_pick_the_api_pods_only, f"Job.spec.template.metadata.labels.{COMPONENT}",
     "api"),
    (rule_selectors_pick_the_api_pods_only, "Service.spec.ports.0.targetPort", 8080),
    (rule_availability_survives_drains_and_load, "PodDisruptionBudget.spec.minAvailable", 2),
    (rule_availability_survives_drains_and_load, "HorizontalPodAutoscaler.spec.minReplicas", 1),
    (rule_availability_survives_drains_and_load,
     "Deployment.spec.strategy.rollingUpdate.maxUnavailable", 1),
    (rule_availability_survives_drains_and_load, f"{API}.resources.requests.cpu", None),
    (rule_resources_fit_the_measured_peak, f"{API}.resources.limits.memory", "128Mi"),
    (rule_resources_fit_the_measured_peak, "ConfigMap.data.PASSWORD_HASH_SLOTS", "6"),
    (rule_resources_fit_the_measured_peak, f"{JOB}.resources", {}),
    (rule_pods_run_unprivileged_on_a_read_only_root, f"{POD}.securityContext.runAsUser", 0),
    (rule_pods_run_unprivileged_on_a_read_only_root,
     f"{API}.securityContext.readOnlyRootFilesystem", False),
    (rule_pods_run_unprivileged_on_a_read_only_root, f"{JOB}.volumeMounts", []),
    (rule_the_environment_is_the_apps, "ConfigMap.data.WAITRESS_THREAD", "8"),
    (rule_the_environment_is_the_apps, "ConfigMap.data.DATABASE_POOL_SIZE", "4"),
    (rule_the_environment_is_the_apps, f"{JOB}.envFrom.1.secretRef.name", "bookshelf-secrets"),
    (rule_the_secret_holds_placeholders_the_app_refuses, "Secret.stringData.SECRET_KEY",
     "x" * 48),
    (rule_the_secret_holds_placeholders_the_app_refuses, "Secret.stringData.SECRET_KEY",
     "REPLACE-ME-" * 4),
    (rule_kustomization_applies_all_but_the_secret, "Kustomization.resources.0", "secret.yaml"),
    (rule_kustomization_applies_all_but_the_secret, "Kustomization.images.0.name", "api"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "path", "value"),
    BREAKAGES,
    ids=[f"{rule.__name__.removeprefix('rule_')}:{path}" for rule, path, _ in BREAKAGES],
)
def test_each_rule_can_fail(rule, path, value, manifests):
    set_in(manifests, path, value)
    with pytest.raises(AssertionError):
        rule(manifests)


def test_every_rule_is_broken_at_least_once():
    assert {rule for rule, _, _ in BREAKAGES} == set(RULES)


# What the manifests assume of the app


def test_the_server_stops_within_the_bound_the_grace_period_assumes():
    """The server drains for DRAIN_SECONDS, then gives its dispatchers a second to close."""
    tree = ast.parse((ROOT / "bookshelf" / "server.py").read_text())
    constants = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    }
    assert constants["DRAIN_SECONDS"] + 1 + constants["POLL_SECONDS"] < SERVER_STOP_SECONDS


def test_the_probes_answer_a_kubelet_in_production(make_app, manifests):
    """The kubelet sends the pod's address as Host: the probes answer it, the API does not."""
    data = manifests["ConfigMap"]["data"] | {"RATELIMIT_STORAGE_URI": "memory://"}
    settings = from_environment(data)
    app = make_app(APP_ENV="production", SECRET_KEY=secrets.token_urlsafe(48), **settings)
    client = app.test_client()
    container = api(manifests)
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        response = client.get(path, headers={"Host": KUBELET_HOST})
        assert response.status_code == 200, (path, response.json)
    assert client.get("/api/v1/books", headers={"Host": KUBELET_HOST}).status_code == 400
    public = urlsplit(data["PUBLIC_URL"]).netloc
    assert client.get("/api/v1/books", headers={"Host": public}).status_code == 200
