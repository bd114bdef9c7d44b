"""k8s/overlays rendered with `kubectl kustomize`, alone and with each optional component (k8s/components/keda,
k8s/components/monitoring) added to the overlay's `components:` the way an operator enables it, then validated
against Kubernetes' schemas and checked against the code:

- every environment variable of every container is a real setting of its service (Jobs in a service's image too)
  or, for PostgreSQL, MinIO and mc, one of the few the image's documentation names; every pod is hardened;
- dev: one replica each, the CPU images, its own PostgreSQL and MinIO that the settings and Secrets point at, a
  bucket Job for the bucket the services use, and every Secret a pod references is there with its key;
- prod: no Secret at all (the operator's, listed in docs/operations.md), GPUs for TTS and ASR, two replicas or more,
  a PodDisruptionBudget per Deployment and a CPU HPA for the gateway and profiles whose selectors and targets match,
  the migration and model-pull Jobs running real voice-admin commands in the services' own images, scrape
  annotations on the metrics ports;
- the custom resources (KEDA, Prometheus operator) by structure, since kubernetes-validate has no schema for them:
  every metric and label they query is one the services export, and the numbers tied to a setting match it.

The base checks of test_k8s_manifests run on every rendering, and each check here also runs on a broken copy, so
none can pass by not looking."""

from __future__ import annotations

import base64
import copy
import importlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from test_k8s_components import matches
from test_k8s_manifests import (
    CHECKS,
    KUBERNETES_VERSIONS,
    REPO,
    SETTINGS,
    Manifest,
    config_of,
    container,
    of_kind,
    service_of,
    valid_names,
)

OVERLAYS = ("dev", "prod")
OPTIONAL_COMPONENTS = ("keda", "monitoring")
RENDERINGS = [(overlay, None) for overlay in OVERLAYS] + [
    (overlay, component) for overlay in OVERLAYS for component in OPTIONAL_COMPONENTS
]
# Custom resources: kubernetes-validate knows only Kubernetes' own kinds, so these (and only these) skip the schema
# and are checked by structure below.
CUSTOM_KINDS = {
    "ScaledObject": "keda.sh/v1alpha1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
# Third-party images and the variables their documentation defines (MC_HOST_<alias> is mc's alias; the two
# S3_* feed it).
THIRD_PARTY_VARIABLES = {
    "postgres": {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "PGDATA"},
    "minio/minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
    "minio/mc": {"S3_ACCESS_KEY", "S3_SECRET_KEY", "MC_HOST_store"},
}
GPU_SERVICES = ("tts", "asr")
HPA_SERVICES = ("gateway", "profiles")
# The operator commands the Jobs may run, with the service whose image (and settings) each runs in.
JOB_COMMANDS = {
    ("voice-admin", "migrate"): "profiles",
    ("voice-admin", "models", "pull", "tts"): "tts",
    ("voice-admin", "models", "pull", "asr"): "asr",
}
# Where the services' Prometheus collectors are defined.
METRIC_MODULES = (
    "voice_common.observability",
    "voice_gateway.metrics",
    "voice_tts.metrics",
    "voice_asr.metrics",
)
# Series from outside the code: Prometheus' own and kube-state-metrics'.
EXTERNAL_METRICS = {"up": set(), "kube_deployment_status_replicas_unavailable": {"deployment"}}
# Labels Prometheus adds to every scraped series (PodMonitor / annotation discovery), beside the code's own.
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance"}
HARDENED = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

Rendering = tuple[str, str | None]


def render(overlay: str, component: str | None, tmp_path: Path) -> list[Manifest]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) must be on PATH"
    directory = REPO / "k8s" / "overlays" / overlay
    if component is not None:
        # As an operator enables it: the component appended to the overlay's own `components:`, in a copy (the
        # copy keeps the relative paths between overlays and components).
        shutil.copytree(REPO / "k8s", tmp_path / "k8s")
        directory = tmp_path / "k8s" / "overlays" / overlay
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        kustomization.setdefault("components", []).append(f"../../components/{component}")
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    rendered = subprocess.run(
        [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


@pytest.fixture(scope="module")
def renderings(tmp_path_factory: pytest.TempPathFactory) -> dict[Rendering, list[Manifest]]:
    return {
        (overlay, component): render(overlay, component, tmp_path_factory.mktemp(f"{overlay}-{component}"))
        for overlay, component in RENDERINGS
    }


def rendering_id(rendering: Rendering) -> str:
    overlay, component = rendering
    return overlay if component is None else f"{overlay}+{component}"


# --- reading the rendered objects -----------------------------------------------------------------------------


def pods(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest, dict[str, Any]]]:
    """(kind/name, the workload, its pod spec) of every Deployment, StatefulSet and Job."""
    for item in manifests:
        if item["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{item['kind']}/{item['metadata']['name']}", item, item["spec"]["template"]["spec"]


def image_repository(image: str) -> str:
    repository, _, _ = image.rpartition(":")
    return repository


def platform_service(image: str) -> str | None:
    """The service whose image this is (voice-<service>, under any registry), else None."""
    name = image_repository(image).rsplit("/", 1)[-1]
    service = name.removeprefix("voice-")
    return service if name.startswith("voice-") and service in SETTINGS else None


def image_tag(image: str) -> str:
    return image.rpartition(":")[2]


def environment(manifests: list[Manifest], spec: dict[str, Any]) -> dict[str, Any]:
    """Every variable a container gets: ConfigMap values as strings, the rest as their env entries."""
    config_maps = of_kind(manifests, "ConfigMap")
    variables: dict[str, Any] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            variables.update(config_maps.get(source["configMapRef"]["name"], {}).get("data", {}))
    for item in spec.get("env", []):
        variables[item["name"]] = item.get("value", item)
    return variables


def secret_references(manifests: list[Manifest]) -> set[tuple[str, str]]:
    """(Secret, key) for every secretKeyRef in every pod; a whole-Secret envFrom is not used here."""
    references = set()
    for where, _, pod in pods(manifests):
        for spec in pod["containers"] + pod.get("initContainers", []):
            assert not any("secretRef" in source for source in spec.get("envFrom", [])), where
            for item in spec.get("env", []):
                reference = item.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    references.add((reference["name"], reference["key"]))
    return references


def secret_value(manifests: list[Manifest], reference: dict[str, Any]) -> str:
    """The value an env entry takes from a Secret (the reference is the entry's valueFrom.secretKeyRef)."""
    return base64.b64decode(
        of_kind(manifests, "Secret")[reference["name"]]["data"][reference["key"]]
    ).decode()


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    # matchLabels and `In` expressions, which are all these manifests use (test_k8s_components asserts that).
    return matches(selector, labels)


def pod_labels(workload: Manifest) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def effective_max_queue(manifests: list[Manifest], service: str) -> int:
    deployment = of_kind(manifests, "Deployment")[f"voice-{service}"]
    prefix, settings = SETTINGS[service]
    return int(
        config_of(manifests, deployment).get(f"{prefix}MAX_QUEUE", settings.model_fields["max_queue"].default)
    )


def jobs_by_command(manifests: list[Manifest]) -> dict[tuple[str, ...], Manifest]:
    return {tuple(container(job)["command"]): job for job in of_kind(manifests, "Job").values()}


# --- checks for every rendering --------------------------------------------------------------------------------


def unknown_container_variables(manifests: list[Manifest]) -> list[str]:
    wrong = []
    for where, _, pod in pods(manifests):
        for spec in pod["containers"] + pod.get("initContainers", []):
            service = platform_service(spec["image"])
            allowed = (
                valid_names(service)
                if service
                else THIRD_PARTY_VARIABLES.get(image_repository(spec["image"]))
            )
            if allowed is None:
                wrong.append(f"{where}: image {spec['image']} is neither a service's nor a known one")
                continue
            wrong += [
                f"{where}/{spec['name']}: {name}"
                for name in sorted(set(environment(manifests, spec)) - allowed)
            ]
    return wrong


def pod_hardening_gaps(manifests: list[Manifest]) -> list[str]:
    wrong = []
    for where, _, pod in pods(manifests):
        if pod.get("automountServiceAccountToken") is not False:
            wrong.append(f"{where}: the service account token is mounted")
        if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
            wrong.append(f"{where}: the pod may run as root")
        for spec in pod["containers"] + pod.get("initContainers", []):
            context = spec.get("securityContext", {})
            wrong += [
                f"{where}/{spec['name']}: {key}"
                for key, value in HARDENED.items()
                if context.get(key) != value
            ]
            if not context.get("runAsUser"):
                wrong.append(f"{where}/{spec['name']}: no non-zero runAsUser")
            if "/tmp" not in {mount["mountPath"] for mount in spec.get("volumeMounts", [])}:
                wrong.append(f"{where}/{spec['name']}: no /tmp volume (the root filesystem is read-only)")
            resources = spec.get("resources", {})
            if not {"cpu", "memory"} <= set(resources.get("requests", {})) or "memory" not in resources.get(
                "limits", {}
            ):
                wrong.append(f"{where}/{spec['name']}: requests or limits missing")
            tag = image_tag(spec["image"])
            if not tag or tag == "latest" or ":" not in spec["image"]:
                wrong.append(f"{where}/{spec['name']}: image {spec['image']} is not pinned by tag")
        if where.startswith("StatefulSet/"):
            for spec in pod["containers"]:
                if "readinessProbe" not in spec:
                    wrong.append(f"{where}/{spec['name']}: no readiness probe")
    return wrong


def job_gaps(manifests: list[Manifest]) -> list[str]:
    """The Jobs in a service's image run a known voice-admin command in that service's own image and settings;
    the model pulls write to the voice-models volume the services read."""
    deployments = of_kind(manifests, "Deployment")
    wrong = []
    for name, job in of_kind(manifests, "Job").items():
        spec = container(job)
        if platform_service(spec["image"]) is None:
            continue
        command = tuple(spec.get("command", []))
        service = JOB_COMMANDS.get(command)
        if service is None:
            wrong.append(f"Job/{name}: {' '.join(command)} is not a voice-admin command a Job runs")
            continue
        deployment = deployments[f"voice-{service}"]
        if spec["image"] != container(deployment)["image"]:
            wrong.append(
                f"Job/{name}: image {spec['image']}, the {service} service runs {container(deployment)['image']}"
            )
        variables = environment(manifests, spec)
        if set(config_of(manifests, deployment)) - set(variables):
            wrong.append(f"Job/{name}: not the {service} service's settings (its ConfigMap)")
        if command[1] == "models":
            mounts = {mount["mountPath"]: mount["name"] for mount in spec.get("volumeMounts", [])}
            volumes = {
                volume["name"]: volume for volume in job["spec"]["template"]["spec"].get("volumes", [])
            }
            claim = volumes.get(mounts.get("/models", ""), {}).get("persistentVolumeClaim", {})
            if variables.get("HF_HUB_CACHE") != "/models" or claim.get("claimName") != "voice-models":
                wrong.append(f"Job/{name}: does not write HF_HUB_CACHE=/models on the voice-models volume")
        if job["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") in {
            f"voice-{service}" for service in SETTINGS
        }:
            wrong.append(
                f"Job/{name}: its pods carry a service's name label, so that Service would route to them"
            )
    return wrong


# --- dev -------------------------------------------------------------------------------------------------------


def dev_gaps(manifests: list[Manifest]) -> list[str]:
    wrong = []
    for where, workload, pod in pods(manifests):
        if workload["kind"] != "Job" and workload["spec"].get("replicas") != 1:
            wrong.append(f"{where}: replicas {workload['spec'].get('replicas')}, not 1")
        for spec in pod["containers"]:
            if "nvidia.com/gpu" in str(spec.get("resources")):
                wrong.append(f"{where}: asks for a GPU")
    deployments = of_kind(manifests, "Deployment")
    for service in GPU_SERVICES:
        deployment = deployments[f"voice-{service}"]
        if not image_tag(container(deployment)["image"]).endswith("-cpu"):
            wrong.append(f"{service}: image {container(deployment)['image']} is not a CPU image")
        if config_of(manifests, deployment).get(f"{service.upper()}_DEVICE", "auto") not in ("auto", "cpu"):
            wrong.append(f"{service}: the device setting is not the CPU")
    wrong += [
        f"{secret}/{key} is referenced but not in the overlay"
        for secret, key in sorted(secret_references(manifests))
        if key not in of_kind(manifests, "Secret").get(secret, {}).get("data", {})
    ]
    if "voice-models" not in of_kind(manifests, "PersistentVolumeClaim"):
        wrong.append("no PVC voice-models")
    # The stores' checks read the Secrets' values: only once every reference is there.
    return wrong or dev_store_gaps(manifests)


def store_endpoint(manifests: list[Manifest], name: str, label: str, port: int) -> list[str]:
    """The in-cluster store: a StatefulSet with a volume claim template and pods labelled as the network policies
    expect, and a Service of that name on that port selecting them."""
    wrong = []
    stateful_set = of_kind(manifests, "StatefulSet").get(name)
    service = of_kind(manifests, "Service").get(name)
    if stateful_set is None or service is None:
        return [f"{name}: no StatefulSet and Service"]
    labels = pod_labels(stateful_set)
    if labels.get("app.kubernetes.io/name") != label:
        wrong.append(
            f"{name}: pods not labelled app.kubernetes.io/name={label} (the network policies' selector)"
        )
    if not selector_matches({"matchLabels": service["spec"]["selector"]}, labels):
        wrong.append(f"{name}: the Service does not select the StatefulSet's pods")
    if port not in {item["port"] for item in service["spec"]["ports"]} or port not in {
        item["containerPort"] for item in container(stateful_set)["ports"]
    }:
        wrong.append(f"{name}: not on port {port}")
    if not stateful_set["spec"].get("volumeClaimTemplates"):
        wrong.append(f"{name}: its data is not on a PVC")
    return wrong


def dev_store_gaps(manifests: list[Manifest]) -> list[str]:
    """The services' settings and Secrets point at the in-cluster PostgreSQL and MinIO, with their credentials."""
    wrong = store_endpoint(manifests, "voice-postgresql", "postgresql", 5432)
    wrong += store_endpoint(manifests, "voice-minio", "minio", 9000)
    if wrong:
        return wrong
    postgres = environment(manifests, container(of_kind(manifests, "StatefulSet")["voice-postgresql"]))
    profiles = environment(manifests, container(of_kind(manifests, "Deployment")["voice-profiles"]))
    url = urlsplit(secret_value(manifests, profiles["VOICE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]))
    wanted = (
        "postgresql+psycopg",
        "voice-postgresql",
        5432,
        postgres["POSTGRES_USER"],
        secret_value(manifests, postgres["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]),
        "/" + postgres["POSTGRES_DB"],
    )
    got = (url.scheme, url.hostname, url.port, url.username, url.password, url.path)
    if got != wanted:
        wrong.append(
            f"VOICE_DATABASE_URL is {got} (scheme, host, port, user, password, database), not {wanted}"
        )
    minio = environment(manifests, container(of_kind(manifests, "StatefulSet")["voice-minio"]))
    root = {
        name: minio[name]["valueFrom"]["secretKeyRef"] for name in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
    }
    buckets = set()
    for service in ("profiles", "tts"):
        deployment = of_kind(manifests, "Deployment")[f"voice-{service}"]
        variables = environment(manifests, container(deployment))
        endpoint = urlsplit(str(variables.get("VOICE_S3_ENDPOINT")))
        if (endpoint.hostname, endpoint.port) != ("voice-minio", 9000):
            wrong.append(f"{service}: VOICE_S3_ENDPOINT is not the in-cluster MinIO")
        for setting, root_name in (
            ("VOICE_S3_ACCESS_KEY", "MINIO_ROOT_USER"),
            ("VOICE_S3_SECRET_KEY", "MINIO_ROOT_PASSWORD"),
        ):
            if variables[setting]["valueFrom"]["secretKeyRef"] != root[root_name]:
                wrong.append(f"{service}: {setting} is not MinIO's {root_name}")
        buckets.add(variables.get("VOICE_S3_BUCKET", "voice"))
    bucket_init = [job for job in of_kind(manifests, "Job").values() if "mc" in container(job)["command"]]
    if len(bucket_init) != 1:
        return [*wrong, "not one bucket-init Job"]
    spec = container(bucket_init[0])
    command = spec["command"]
    made = {argument.split("/", 1)[1] for argument in command if argument.startswith("store/")}
    if "mb" not in command or "--ignore-existing" not in command or made != buckets:
        wrong.append(f"bucket-init: {' '.join(command)} does not make {buckets} idempotently")
    if "@voice-minio:9000" not in str(environment(manifests, spec).get("MC_HOST_store")):
        wrong.append("bucket-init: its alias is not the in-cluster MinIO")
    let_in = [
        policy
        for policy in of_kind(manifests, "NetworkPolicy").values()
        if selector_matches(policy["spec"]["podSelector"], {"app.kubernetes.io/name": "minio"})
        and any(
            selector_matches(peer.get("podSelector", {"matchLabels": {"-": "-"}}), pod_labels(bucket_init[0]))
            and {"protocol": "TCP", "port": 9000} in rule["ports"]
            for rule in policy["spec"].get("ingress", [])
            for peer in rule.get("from", [])
        )
    ]
    if not let_in:
        wrong.append("bucket-init: no network policy lets it reach MinIO on 9000")
    return wrong


# --- prod ------------------------------------------------------------------------------------------------------


def autoscalers(manifests: list[Manifest]) -> dict[str, list[tuple[str, Manifest]]]:
    """Deployment name -> the HPAs and ScaledObjects that scale it."""
    scaled: dict[str, list[tuple[str, Manifest]]] = {}
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for item in of_kind(manifests, kind).values():
            target = item["spec"]["scaleTargetRef"]
            if (
                target.get("kind", "Deployment") == "Deployment"
                and target.get("apiVersion", "apps/v1") == "apps/v1"
            ):
                scaled.setdefault(target["name"], []).append((kind, item))
    return scaled


def prod_gaps(manifests: list[Manifest]) -> list[str]:
    wrong = []
    if of_kind(manifests, "Secret"):
        wrong.append(f"Secrets in the overlay: {sorted(of_kind(manifests, 'Secret'))}")
    deployments = of_kind(manifests, "Deployment")
    scaled = autoscalers(manifests)
    budgets = of_kind(manifests, "PodDisruptionBudget").values()
    for name, deployment in deployments.items():
        service = service_of(deployment)
        spec = container(deployment)
        labels = pod_labels(deployment)
        if service in GPU_SERVICES:
            if str(spec["resources"].get("limits", {}).get("nvidia.com/gpu")) != "1":
                wrong.append(f"{service}: no nvidia.com/gpu: 1 limit")
            if not image_tag(spec["image"]).endswith("-cuda"):
                wrong.append(f"{service}: image {spec['image']} is not a CUDA image")
        scalers = scaled.get(name, [])
        if len(scalers) > 1:
            wrong.append(f"{service}: scaled by {len(scalers)} autoscalers, which would fight")
        if scalers and "replicas" in deployment["spec"]:
            wrong.append(
                f"{service}: autoscaled, yet its count is in the manifest (every apply would reset it)"
            )
        minimum = deployment["spec"].get("replicas", 1)
        for kind, scaler in scalers:
            minimum = scaler["spec"][
                "minReplicas" if kind == "HorizontalPodAutoscaler" else "minReplicaCount"
            ]
        if minimum < 2:
            wrong.append(f"{service}: at least {minimum} replica(s), not 2")
        if service in HPA_SERVICES:
            hpas = [scaler for kind, scaler in scalers if kind == "HorizontalPodAutoscaler"]
            if len(hpas) != 1 or hpas[0]["apiVersion"] != "autoscaling/v2":
                wrong.append(f"{service}: not one autoscaling/v2 HPA")
            elif not any(
                metric.get("resource", {}).get("name") == "cpu"
                for metric in hpas[0]["spec"].get("metrics", [])
            ):
                wrong.append(f"{service}: its HPA does not scale on CPU")
        elif any(kind == "HorizontalPodAutoscaler" for kind, _ in scalers):
            wrong.append(f"{service}: a CPU HPA (TTS and ASR scale on their queue, through KEDA)")
        matching = [budget for budget in budgets if selector_matches(budget["spec"]["selector"], labels)]
        if len(matching) != 1:
            wrong.append(f"{service}: {len(matching)} PodDisruptionBudgets select its pods, not 1")
        elif matching[0]["spec"].get("maxUnavailable") != 1 and matching[0]["spec"].get("minAvailable") != 1:
            wrong.append(f"{service}: its PodDisruptionBudget is not maxUnavailable or minAvailable 1")
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        metrics_port = {port["name"]: port["containerPort"] for port in spec["ports"]}["metrics"]
        if (
            annotations.get("prometheus.io/scrape"),
            annotations.get("prometheus.io/port"),
            annotations.get("prometheus.io/path"),
        ) != ("true", str(metrics_port), "/metrics"):
            wrong.append(f"{service}: no prometheus.io scrape annotations for port {metrics_port}")
    for budget in budgets:
        if not any(
            selector_matches(budget["spec"]["selector"], pod_labels(item)) for item in deployments.values()
        ):
            wrong.append(f"PodDisruptionBudget/{budget['metadata']['name']}: selects no Deployment's pods")
    profiles = deployments["voice-profiles"]
    if profiles["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") != 0:
        wrong.append(
            "profiles: a rollout may take a pod down before the new one is ready (after the migration)"
        )
    for service in ("profiles", "tts"):
        variables = environment(manifests, container(deployments[f"voice-{service}"]))
        reference = variables.get("VOICE_S3_ENDPOINT", {})
        if not isinstance(reference, dict) or "secretKeyRef" not in reference.get("valueFrom", {}):
            wrong.append(f"{service}: VOICE_S3_ENDPOINT is not the external store's, from the Secret")
    claim = of_kind(manifests, "PersistentVolumeClaim").get("voice-models", {}).get("spec", {})
    if claim.get("accessModes") != ["ReadWriteMany"] or "storageClassName" in claim:
        wrong.append("voice-models: not ReadWriteMany with the storage class left to the operator")
    commands = jobs_by_command(manifests)
    for command in JOB_COMMANDS:
        if command not in commands:
            wrong.append(f"no Job runs {' '.join(command)}")
    migration = commands.get(("voice-admin", "migrate"))
    if migration is not None:
        version = image_tag(container(migration)["image"]).replace(".", "-")
        if not migration["metadata"]["name"].endswith(f"-{version}"):
            wrong.append(
                f"Job/{migration['metadata']['name']}: its name does not carry the release {version}"
            )
    return wrong


# --- custom resources and metrics ---------------------------------------------------------------------------------


def exported_metrics() -> dict[str, set[str]]:
    """Every series name the services export (a counter's _total, a histogram's _bucket...) -> its label names."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    exported: dict[str, set[str]] = {}
    for module_name in METRIC_MODULES:
        for value in vars(importlib.import_module(module_name)).values():
            if not isinstance(value, MetricWrapperBase):
                continue
            labels = set(value._labelnames)  # the collector's label names; no public accessor exists
            for family in value.describe():
                for suffix in suffixes[family.type]:
                    exported[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return exported


SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:(\{[^}]*\})|(?=\[))")
METRIC_NAME = re.compile(r"\b(?:voice|kube)_[a-z0-9_]+\b")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def queries(manifests: list[Manifest]) -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and KEDA Prometheus trigger."""
    found = []
    for rule_set in of_kind(manifests, "PrometheusRule").values():
        for group in rule_set["spec"]["groups"]:
            for rule in group["rules"]:
                found.append((f"alert {rule['alert']}", rule["expr"]))
    for scaled in of_kind(manifests, "ScaledObject").values():
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                found.append((f"ScaledObject/{scaled['metadata']['name']}", trigger["metadata"]["query"]))
    return found


def metric_gaps(manifests: list[Manifest]) -> list[str]:
    """Every series a query names is exported by the code (or is Prometheus' or kube-state-metrics'), every label
    it matches on is one the series has, and status codes are gRPC's names."""
    known = exported_metrics() | EXTERNAL_METRICS
    status_names = {code.name for code in grpc.StatusCode}
    wrong = []
    for where, query in queries(manifests):
        names = set(METRIC_NAME.findall(query))
        selectors = SELECTOR.findall(query)
        names |= {name for name, _ in selectors}
        if not names:
            wrong.append(f"{where}: names no metric")
        wrong += [f"{where}: {name} is not a metric the code exports" for name in sorted(names - set(known))]
        for name, matchers in selectors:
            for label, _, value in MATCHER.findall(matchers):
                if name in known and label not in known[name] | TARGET_LABELS:
                    wrong.append(f"{where}: {name} has no label {label}")
                if label == "code" and not set(value.split("|")) <= status_names:
                    wrong.append(f"{where}: {value} are not all gRPC status codes")
    return wrong


def custom_resource_gaps(manifests: list[Manifest]) -> list[str]:
    """The custom resources by structure: their API group, targets that exist, numbers that match the settings."""
    wrong = []
    for item in manifests:
        if item["kind"] in CUSTOM_KINDS and item["apiVersion"] != CUSTOM_KINDS[item["kind"]]:
            wrong.append(f"{item['kind']}/{item['metadata']['name']}: apiVersion {item['apiVersion']}")
    deployments = of_kind(manifests, "Deployment")
    for name, scaled in of_kind(manifests, "ScaledObject").items():
        target = scaled["spec"]["scaleTargetRef"]
        if target.get("name") not in deployments or target.get("kind", "Deployment") != "Deployment":
            wrong.append(f"ScaledObject/{name}: scales {target}, not a Deployment here")
            continue
        service = service_of(deployments[target["name"]])
        if scaled["spec"].get("minReplicaCount", 0) < 1:
            wrong.append(
                f"ScaledObject/{name}: may scale to zero (a GPU pod takes minutes to load its model)"
            )
        for trigger in scaled["spec"]["triggers"]:
            metadata = trigger["metadata"]
            if trigger["type"] != "prometheus" or f"voice_{service}_queue_depth" not in metadata["query"]:
                wrong.append(f"ScaledObject/{name}: not on voice_{service}_queue_depth from Prometheus")
                continue
            if trigger.get("metricType", "AverageValue") != "AverageValue":
                wrong.append(f"ScaledObject/{name}: the threshold is not per replica")
            if not 0 < float(metadata["threshold"]) < effective_max_queue(manifests, service):
                wrong.append(
                    f"ScaledObject/{name}: threshold {metadata['threshold']} is not below the queue limit"
                )
            namespace = scaled["metadata"].get("namespace")
            if namespace is not None and f'namespace="{namespace}"' not in metadata["query"]:
                wrong.append(f"ScaledObject/{name}: the query is not about its own namespace {namespace}")
    for monitor in of_kind(manifests, "PodMonitor").values():
        selector = monitor["spec"]["selector"]
        ports = {endpoint.get("port") for endpoint in monitor["spec"]["podMetricsEndpoints"]}
        for deployment in deployments.values():
            labels = pod_labels(deployment)
            values = [
                expression["values"]
                for expression in selector.get("matchExpressions", [])
                if expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In"
            ]
            if not selector_matches({"matchLabels": selector.get("matchLabels", {})}, labels) or not all(
                labels["app.kubernetes.io/name"] in value for value in values
            ):
                wrong.append(
                    f"PodMonitor/{monitor['metadata']['name']}: misses {deployment['metadata']['name']}"
                )
            if ports != {"metrics"} or "metrics" not in {
                port["name"] for port in container(deployment)["ports"]
            }:
                wrong.append(f"PodMonitor/{monitor['metadata']['name']}: does not scrape the metrics port")
    saturation = re.compile(r"voice_(tts|asr)_queue_depth\)?\s*/\s*(\d+)")
    for where, query in queries(manifests):
        for service, limit in saturation.findall(query):
            if int(limit) != effective_max_queue(manifests, service):
                wrong.append(
                    f"{where}: divides by {limit}, {service.upper()}_MAX_QUEUE is "
                    f"{effective_max_queue(manifests, service)}"
                )
    alerts = {where for where, _ in queries(manifests) if where.startswith("alert ")}
    if of_kind(manifests, "PrometheusRule"):
        expressions = " ".join(query for where, query in queries(manifests) if where in alerts)
        for wanted in (
            "voice_grpc_requests_total",
            "voice_tts_queue_depth",
            "voice_asr_queue_depth",
            "voice_tts_time_to_first_audio_seconds_bucket",
            "kube_deployment_status_replicas_unavailable",
        ):
            if wanted not in expressions:
                wrong.append(f"no alert on {wanted}")
    return wrong


# --- the tests -------------------------------------------------------------------------------------------------

ALL = pytest.mark.parametrize("rendering", RENDERINGS, ids=rendering_id)
PROD = pytest.mark.parametrize(
    "rendering", [item for item in RENDERINGS if item[0] == "prod"], ids=rendering_id
)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@ALL
def test_schema_valid(
    renderings: dict[Rendering, list[Manifest]], rendering: Rendering, version: str
) -> None:
    kinds = set()
    for item in renderings[rendering]:
        kinds.add(item["kind"])
        if item["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(item, version, strict=True)
    expected = {"keda": {"ScaledObject"}, "monitoring": {"PodMonitor", "PrometheusRule"}, None: set()}
    assert kinds & set(CUSTOM_KINDS) == expected[rendering[1]]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
@ALL
def test_base_check_passes(
    renderings: dict[Rendering, list[Manifest]],
    rendering: Rendering,
    check: Callable[[list[Manifest]], list[str]],
) -> None:
    assert check(renderings[rendering]) == []


OVERLAY_CHECKS: list[Callable[[list[Manifest]], list[str]]] = [
    unknown_container_variables,
    pod_hardening_gaps,
    job_gaps,
    metric_gaps,
]


@pytest.mark.parametrize("check", OVERLAY_CHECKS, ids=lambda check: check.__name__)
@ALL
def test_check_passes(
    renderings: dict[Rendering, list[Manifest]],
    rendering: Rendering,
    check: Callable[[list[Manifest]], list[str]],
) -> None:
    assert check(renderings[rendering]) == []


@pytest.mark.parametrize("component", [None, "monitoring"])
def test_dev(renderings: dict[Rendering, list[Manifest]], component: str | None) -> None:
    manifests = renderings[("dev", component)]
    assert dev_gaps(manifests) == []
    assert of_kind(manifests, "Secret"), "dev creates its own (development-only) Secrets"


@PROD
def test_prod(renderings: dict[Rendering, list[Manifest]], rendering: Rendering) -> None:
    assert prod_gaps(renderings[rendering]) == []


@PROD
def test_custom_resources(renderings: dict[Rendering, list[Manifest]], rendering: Rendering) -> None:
    assert custom_resource_gaps(renderings[rendering]) == []


def test_keda_on_dev_is_noticed(renderings: dict[Rendering, list[Manifest]]) -> None:
    # The KEDA component is prod's: its queries name the prod namespace, so on dev (namespace voice-dev) they would
    # read prod's queues, and it takes the one-replica count away. The checks say so rather than pass.
    # The monitoring component has no such tie.
    assert custom_resource_gaps(renderings[("dev", "monitoring")]) == []
    wrong = custom_resource_gaps(renderings[("dev", "keda")])
    assert wrong and all("namespace voice-dev" in line for line in wrong), wrong
    assert sorted(dev_gaps(renderings[("dev", "keda")])) == [
        "Deployment/voice-asr: replicas None, not 1",
        "Deployment/voice-tts: replicas None, not 1",
    ]


def test_every_job_command_is_a_voice_admin_command(capsys: pytest.CaptureFixture[str]) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module_name, _, function = scripts["voice-admin"].partition(":")
    main = getattr(importlib.import_module(module_name), function)
    for command in JOB_COMMANDS:
        # argparse answers --help of a command that exists with exit 0, and an unknown one with exit 2.
        with pytest.raises(SystemExit) as exit_info:
            main([*command[1:], "--help"])
        assert exit_info.value.code == 0, command
        assert "usage: voice-admin" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "pull", "gateway", "--help"])
    assert exit_info.value.code == 2


# Runs voice-admin with the named top-level packages made unimportable, as in an image whose extra lacks them.
_WITHOUT_PACKAGES = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in sys.argv[1].split(","):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from voice_profiles.admin import main
main(sys.argv[2:])
"""
# What each service's image lacks (pyproject.toml: the profiles extra has the database, tts/asr the model hub).
NOT_IN_IMAGE = {
    "profiles": ("huggingface_hub", "torch", "transformers", "qwen_tts", "ctranslate2", "faster_whisper"),
    "tts": ("sqlalchemy", "alembic", "psycopg", "aiosqlite", "ctranslate2", "faster_whisper"),
    "asr": ("sqlalchemy", "alembic", "psycopg", "aiosqlite", "torch", "transformers", "qwen_tts"),
}


@pytest.mark.parametrize("command", list(JOB_COMMANDS), ids=" ".join)
def test_job_command_runs_with_its_images_packages(command: tuple[str, ...], tmp_path: Path) -> None:
    # The migration for real on an embedded database; a pull of a model that is a directory (nothing to download)
    # goes through the service's settings and model naming, all a pull does before the hub.
    service = JOB_COMMANDS[command]
    arguments = [*command[1:], "--model", str(tmp_path)] if command[1] == "models" else list(command[1:])
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PACKAGES, ",".join(NOT_IN_IMAGE[service]), *arguments],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        env={**os.environ, "VOICE_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert ("schema is current" if command[1] == "migrate" else "nothing to download") in result.stdout


def test_the_package_check_refuses_a_missing_package(tmp_path: Path) -> None:
    # Without this, a blocker that blocks nothing would pass the test above.
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PACKAGES, "sqlalchemy", "migrate"],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        env={**os.environ, "VOICE_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode != 0
    assert "No module named 'sqlalchemy'" in result.stderr


def test_prod_secrets_are_documented(renderings: dict[Rendering, list[Manifest]]) -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Kubernetes (overlays)", 1)[1].split("\n## ", 1)[0]
    references = secret_references(renderings[("prod", None)])
    assert {secret for secret, _ in references} == {"voice-internal", "voice-storage"}
    missing = [
        f"{secret}/{key}" for secret, key in sorted(references) if secret not in section or key not in section
    ]
    assert missing == [], (
        "docs/operations.md, Kubernetes (overlays), does not tell the operator to create these"
    )


# --- each check on a broken copy --------------------------------------------------------------------------------


def _deployment(manifests: list[Manifest], service: str) -> Manifest:
    return of_kind(manifests, "Deployment")[f"voice-{service}"]


def _typo_in_job_env(manifests: list[Manifest]) -> None:
    container(jobs_by_command(manifests)[("voice-admin", "migrate")])["env"][0]["name"] = "VOICE_DATABASE_URI"


def _unknown_store_variable(manifests: list[Manifest]) -> None:
    container(of_kind(manifests, "StatefulSet")["voice-minio"])["env"].append(
        {"name": "MINIO_ACCESS_KEY", "value": "x"}
    )


def _writable_store(manifests: list[Manifest]) -> None:
    container(of_kind(manifests, "StatefulSet")["voice-postgresql"])["securityContext"][
        "readOnlyRootFilesystem"
    ] = False


def _unpinned_image(manifests: list[Manifest]) -> None:
    container(of_kind(manifests, "StatefulSet")["voice-minio"])["image"] = "minio/minio:latest"


def _store_without_probe(manifests: list[Manifest]) -> None:
    del container(of_kind(manifests, "StatefulSet")["voice-postgresql"])["readinessProbe"]


def _pull_not_a_command(manifests: list[Manifest]) -> None:
    container(jobs_by_command(manifests)[("voice-admin", "models", "pull", "tts")])["command"][2] = "fetch"


def _migrate_other_image(manifests: list[Manifest]) -> None:
    container(jobs_by_command(manifests)[("voice-admin", "migrate")])["image"] = "voice-profiles:0.0.9"


def _pull_elsewhere(manifests: list[Manifest]) -> None:
    job = jobs_by_command(manifests)[("voice-admin", "models", "pull", "tts")]
    container(job)["volumeMounts"][1]["mountPath"] = "/cache"


def _two_replicas_in_dev(manifests: list[Manifest]) -> None:
    _deployment(manifests, "asr")["spec"]["replicas"] = 2


def _gpu_image_in_dev(manifests: list[Manifest]) -> None:
    container(_deployment(manifests, "tts"))["image"] = "voice-tts:dev-cuda"


def _secret_key_missing(manifests: list[Manifest]) -> None:
    secret = next(name for name in of_kind(manifests, "Secret") if name.startswith("voice-storage"))
    del of_kind(manifests, "Secret")[secret]["data"]["POSTGRES_PASSWORD"]


def _url_wrong_password(manifests: list[Manifest]) -> None:
    secret = next(name for name in of_kind(manifests, "Secret") if name.startswith("voice-storage"))
    data = of_kind(manifests, "Secret")[secret]["data"]
    data["POSTGRES_PASSWORD"] = base64.b64encode(b"another").decode()


def _store_relabelled(manifests: list[Manifest]) -> None:
    stateful_set = of_kind(manifests, "StatefulSet")["voice-minio"]
    stateful_set["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] = "voice-minio"


def _other_bucket(manifests: list[Manifest]) -> None:
    job = next(job for job in of_kind(manifests, "Job").values() if "mc" in container(job)["command"])
    container(job)["command"][-1] = "store/voices"


def _bucket_init_shut_out(manifests: list[Manifest]) -> None:
    manifests.remove(of_kind(manifests, "NetworkPolicy")["voice-minio-bucket-init"])


def _secret_in_prod(manifests: list[Manifest]) -> None:
    manifests.append(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "voice-internal"}, "data": {}}
    )


def _no_gpu(manifests: list[Manifest]) -> None:
    del container(_deployment(manifests, "asr"))["resources"]["limits"]["nvidia.com/gpu"]


def _one_replica(manifests: list[Manifest]) -> None:
    _deployment(manifests, "tts")["spec"]["replicas"] = 1


def _hpa_on_other_deployment(manifests: list[Manifest]) -> None:
    of_kind(manifests, "HorizontalPodAutoscaler")["voice-profiles"]["spec"]["scaleTargetRef"]["name"] = (
        "voice-profile"
    )


def _count_beside_hpa(manifests: list[Manifest]) -> None:
    _deployment(manifests, "gateway")["spec"]["replicas"] = 2


def _budget_misses(manifests: list[Manifest]) -> None:
    of_kind(manifests, "PodDisruptionBudget")["voice-asr"]["spec"]["selector"]["matchLabels"] = {
        "app.kubernetes.io/name": "asr"
    }


def _scrape_wrong_port(manifests: list[Manifest]) -> None:
    annotations = _deployment(manifests, "tts")["spec"]["template"]["metadata"]["annotations"]
    annotations["prometheus.io/port"] = "50053"


def _migration_name_stale(manifests: list[Manifest]) -> None:
    container(jobs_by_command(manifests)[("voice-admin", "migrate")])["image"] = "voice-profiles:0.2.0"
    container(_deployment(manifests, "profiles"))["image"] = "voice-profiles:0.2.0"


def _no_pull_job(manifests: list[Manifest]) -> None:
    job = jobs_by_command(manifests)[("voice-admin", "models", "pull", "asr")]
    manifests.remove(job)


def _alert_on_missing_metric(manifests: list[Manifest]) -> None:
    rule = of_kind(manifests, "PrometheusRule")["voice-platform"]["spec"]["groups"][0]["rules"][0]
    rule["expr"] = rule["expr"].replace("voice_grpc_requests_total", "voice_grpc_request_total")


def _alert_on_missing_label(manifests: list[Manifest]) -> None:
    rule = of_kind(manifests, "PrometheusRule")["voice-platform"]["spec"]["groups"][0]["rules"][0]
    rule["expr"] = rule["expr"].replace("code=~", "status=~")


def _alert_on_unknown_code(manifests: list[Manifest]) -> None:
    rule = of_kind(manifests, "PrometheusRule")["voice-platform"]["spec"]["groups"][0]["rules"][0]
    rule["expr"] = rule["expr"].replace("INTERNAL|", "SERVER_ERROR|")


def _queue_limit_drifted(manifests: list[Manifest]) -> None:
    of_kind(manifests, "ConfigMap")["voice-tts-config"]["data"]["TTS_MAX_QUEUE"] = "64"


def _keda_on_missing_metric(manifests: list[Manifest]) -> None:
    metadata = of_kind(manifests, "ScaledObject")["voice-asr"]["spec"]["triggers"][0]["metadata"]
    metadata["query"] = metadata["query"].replace("voice_asr_queue_depth", "voice_asr_queue_length")


def _keda_and_hpa(manifests: list[Manifest]) -> None:
    hpa = copy.deepcopy(of_kind(manifests, "HorizontalPodAutoscaler")["voice-gateway"])
    hpa["metadata"]["name"] = "voice-tts"
    hpa["spec"]["scaleTargetRef"]["name"] = "voice-tts"
    manifests.append(hpa)


def _keda_on_nothing(manifests: list[Manifest]) -> None:
    of_kind(manifests, "ScaledObject")["voice-tts"]["spec"]["scaleTargetRef"]["name"] = "tts"


def _keda_threshold_above_queue(manifests: list[Manifest]) -> None:
    of_kind(manifests, "ScaledObject")["voice-asr"]["spec"]["triggers"][0]["metadata"]["threshold"] = "16"


def _monitor_misses_a_pod(manifests: list[Manifest]) -> None:
    of_kind(manifests, "PodMonitor")["voice-platform"]["spec"]["selector"]["matchExpressions"][0][
        "values"
    ].remove("voice-asr")


@pytest.mark.parametrize(
    ("rendering", "break_it", "check"),
    [
        (("prod", None), _typo_in_job_env, unknown_container_variables),
        (("dev", None), _unknown_store_variable, unknown_container_variables),
        (("dev", None), _writable_store, pod_hardening_gaps),
        (("dev", None), _unpinned_image, pod_hardening_gaps),
        (("dev", None), _store_without_probe, pod_hardening_gaps),
        (("dev", None), _pull_not_a_command, job_gaps),
        (("prod", None), _migrate_other_image, job_gaps),
        (("prod", None), _pull_elsewhere, job_gaps),
        (("dev", None), _two_replicas_in_dev, dev_gaps),
        (("dev", None), _gpu_image_in_dev, dev_gaps),
        (("dev", None), _secret_key_missing, dev_gaps),
        (("dev", None), _url_wrong_password, dev_gaps),
        (("dev", None), _store_relabelled, dev_gaps),
        (("dev", None), _other_bucket, dev_gaps),
        (("dev", None), _bucket_init_shut_out, dev_gaps),
        (("prod", None), _secret_in_prod, prod_gaps),
        (("prod", None), _no_gpu, prod_gaps),
        (("prod", None), _one_replica, prod_gaps),
        (("prod", None), _hpa_on_other_deployment, prod_gaps),
        (("prod", None), _count_beside_hpa, prod_gaps),
        (("prod", None), _budget_misses, prod_gaps),
        (("prod", None), _scrape_wrong_port, prod_gaps),
        (("prod", None), _migration_name_stale, prod_gaps),
        (("prod", None), _no_pull_job, prod_gaps),
        (("prod", "keda"), _keda_and_hpa, prod_gaps),
        (("prod", "monitoring"), _alert_on_missing_metric, metric_gaps),
        (("prod", "monitoring"), _alert_on_missing_label, metric_gaps),
        (("prod", "monitoring"), _alert_on_unknown_code, metric_gaps),
        (("prod", "keda"), _keda_on_missing_metric, metric_gaps),
        (("prod", "monitoring"), _queue_limit_drifted, custom_resource_gaps),
        (("prod", "keda"), _keda_on_nothing, custom_resource_gaps),
        (("prod", "keda"), _keda_threshold_above_queue, custom_resource_gaps),
        (("prod", "monitoring"), _monitor_misses_a_pod, custom_resource_gaps),
    ],
    ids=lambda item: item.__name__.strip("_") if callable(item) else rendering_id(item),
)
def test_check_catches(
    renderings: dict[Rendering, list[Manifest]],
    rendering: Rendering,
    break_it: Callable[[list[Manifest]], None],
    check: Callable[[list[Manifest]], list[str]],
) -> None:
    broken = copy.deepcopy(renderings[rendering])
    assert check(broken) == [], "the check must pass before the copy is broken"
    break_it(broken)
    assert check(broken) != []
