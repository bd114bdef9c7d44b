"""k8s/base rendered with `kubectl kustomize` and checked against Kubernetes' schemas and against the code: every
environment variable the manifests set is a real setting, ports and probes are the settings' ports, the targets in
the ConfigMaps name the Services, the internal Services are headless, every container is hardened, no ConfigMap
holds a credential, and the pods outlive their drain.

Each check also runs on a deliberately broken copy of the rendered objects, so none can pass by not looking."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from voice_asr.settings import AsrSettings
from voice_common.config import CommonSettings
from voice_common.server.bootstrap import LIVENESS_SERVICE
from voice_gateway.settings import GatewaySettings
from voice_profiles.settings import ProfilesSettings
from voice_tts.settings import TtsSettings

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "k8s" / "base"
# The Kubernetes versions the README claims the manifests for.
KUBERNETES_VERSIONS = ("1.31.0", "1.32.0")
SETTINGS: dict[str, tuple[str, type[BaseSettings]]] = {
    "gateway": ("GATEWAY_", GatewaySettings),
    "profiles": ("PROFILES_", ProfilesSettings),
    "tts": ("TTS_", TtsSettings),
    "asr": ("ASR_", AsrSettings),
}
# Read by libraries, not by the settings classes: the Hugging Face cache (the /models volume) and numba's cache.
LIBRARY_VARIABLES = {"HF_HUB_CACHE", "NUMBA_CACHE_DIR"}
SECRET_LOOKING = ("TOKEN", "KEY", "PASSWORD", "SECRET", "DATABASE_URL")
INTERNAL = ("profiles", "tts", "asr")

Manifest = dict[str, Any]


def render() -> list[Manifest]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) must be on PATH"
    rendered = subprocess.run(
        [kubectl, "kustomize", str(BASE)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return render()


def of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {item["metadata"]["name"]: item for item in manifests if item["kind"] == kind}


def service_of(deployment: Manifest) -> str:
    return str(deployment["metadata"]["name"]).removeprefix("voice-")


def container(deployment: Manifest) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]


def config_of(manifests: list[Manifest], deployment: Manifest) -> dict[str, str]:
    config_maps = of_kind(manifests, "ConfigMap")
    values: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        values.update(config_maps[source["configMapRef"]["name"]]["data"])
    return values


def valid_names(service: str) -> set[str]:
    prefix, settings = SETTINGS[service]
    names = {prefix + field.upper() for field in settings.model_fields}
    return names | {"VOICE_" + field.upper() for field in CommonSettings.model_fields} | LIBRARY_VARIABLES


# --- the checks, each a function of the rendered objects that returns what is wrong ---------------------------


def unknown_variables(manifests: list[Manifest]) -> list[str]:
    wrong = []
    for deployment in of_kind(manifests, "Deployment").values():
        service = service_of(deployment)
        names = set(config_of(manifests, deployment)) | {
            item["name"] for item in container(deployment)["env"]
        }
        wrong += [f"{service}: {name}" for name in sorted(names - valid_names(service))]
    return wrong


def port_mismatches(manifests: list[Manifest]) -> list[str]:
    wrong = []
    for deployment in of_kind(manifests, "Deployment").values():
        service = service_of(deployment)
        prefix, settings = SETTINGS[service]
        config = config_of(manifests, deployment)
        expected = {
            "grpc": int(config.get(prefix + "PORT", settings.model_fields["port"].default)),
            "metrics": int(
                config.get(prefix + "METRICS_PORT", settings.model_fields["metrics_port"].default)
            ),
        }
        # The gateway's OpenAI-compatible HTTP face, unless its settings turn it off (0).
        if "http_port" in settings.model_fields:
            http_port = int(config.get(prefix + "HTTP_PORT", settings.model_fields["http_port"].default))
            if http_port:
                expected["http"] = http_port
        spec = container(deployment)
        ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
        # Probes go to the plaintext health port where there is one (VOICE_HEALTH_PORT: under mutual TLS).
        health_port = int(config.get("VOICE_HEALTH_PORT", 0))
        probe_port = health_port or expected["grpc"]
        if ports != (expected | {"health": health_port} if health_port else expected):
            wrong.append(f"{service}: container ports {ports}, settings say {expected}, health {health_port}")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in spec and spec[probe].get("grpc", {}).get("port") != probe_port:
                wrong.append(f"{service}: {probe} is not a gRPC probe on {probe_port}")
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in spec:
                wrong.append(f"{service}: no {probe}")
        # Liveness asks whether the process answers, readiness (and startup) whether it can serve: a liveness probe
        # on the overall status would restart a replica whose database is down.
        if spec.get("livenessProbe", {}).get("grpc", {}).get("service") != LIVENESS_SERVICE:
            wrong.append(f"{service}: the liveness probe does not ask for {LIVENESS_SERVICE!r}")
        for probe in ("readinessProbe", "startupProbe"):
            if spec.get(probe, {}).get("grpc", {}).get("service", ""):
                wrong.append(f"{service}: the {probe} asks for a named service, not the overall status")
        if service in ("tts", "asr"):
            startup = spec.get("startupProbe", {})
            if startup.get("failureThreshold", 3) * startup.get("periodSeconds", 10) < 15 * 60:
                wrong.append(f"{service}: the startup probe allows less than 15 min for the model load")
        k8s_service = of_kind(manifests, "Service").get(deployment["metadata"]["name"])
        if k8s_service is None:
            wrong.append(f"{service}: no Service")
            continue
        service_ports = {port["name"]: port["port"] for port in k8s_service["spec"]["ports"]}
        if service_ports != expected:
            wrong.append(f"{service}: Service ports {service_ports}, settings say {expected}")
    return wrong


TARGET = re.compile(r"^(?:dns:///)?(?P<host>[a-z0-9-]+):(?P<port>\d+)$")


def target_mismatches(manifests: list[Manifest]) -> list[str]:
    services = of_kind(manifests, "Service")
    wrong = []
    for deployment in of_kind(manifests, "Deployment").values():
        for name, value in config_of(manifests, deployment).items():
            if not name.endswith(("_TARGET", "_ADDRESS")):
                continue
            match = TARGET.match(value)
            if not match:
                wrong.append(f"{name}={value}: not [dns:///]<service>:<port>")
                continue
            target = services.get(match["host"])
            ports = {port["port"] for port in target["spec"]["ports"]} if target else set()
            if int(match["port"]) not in ports:
                wrong.append(f"{name}={value}: no Service {match['host']} with port {match['port']}")
    for service in INTERNAL:
        if services.get(f"voice-{service}", {}).get("spec", {}).get("clusterIP") != "None":
            wrong.append(f"voice-{service}: not headless (the gateway's round_robin would see one address)")
    if services.get("voice-gateway", {}).get("spec", {}).get("clusterIP") == "None":
        wrong.append("voice-gateway: headless, but clients need one stable address")
    return wrong


HARDENED = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def hardening_gaps(manifests: list[Manifest]) -> list[str]:
    wrong = []
    for deployment in of_kind(manifests, "Deployment").values():
        service = service_of(deployment)
        pod = deployment["spec"]["template"]["spec"]
        for spec in pod["containers"] + pod.get("initContainers", []):
            context = spec.get("securityContext", {})
            wrong += [
                f"{service}/{spec['name']}: {key}"
                for key, value in HARDENED.items()
                if context.get(key) != value
            ]
            mounts = {mount["mountPath"]: mount["name"] for mount in spec.get("volumeMounts", [])}
            if "/tmp" not in mounts:
                wrong.append(f"{service}/{spec['name']}: no /tmp volume (the root filesystem is read-only)")
            resources = spec.get("resources", {})
            if not {"cpu", "memory"} <= set(resources.get("requests", {})) or "memory" not in resources.get(
                "limits", {}
            ):
                wrong.append(f"{service}/{spec['name']}: requests or limits missing")
            if service in ("tts", "asr") and mounts.get("/models") != "models":
                wrong.append(f"{service}: the models volume is not at /models")
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        if "emptyDir" not in volumes.get("tmp", {}):
            wrong.append(f"{service}: /tmp is not an emptyDir")
        if service in ("tts", "asr"):
            claim = volumes.get("models", {}).get("persistentVolumeClaim", {})
            if claim.get("claimName") != "voice-models":
                wrong.append(f"{service}: models is not the PVC voice-models")
        if pod.get("automountServiceAccountToken") is not False:
            wrong.append(f"{service}: the service account token is mounted")
        spread = pod.get("topologySpreadConstraints", [])
        if not any(item["topologyKey"] == "kubernetes.io/hostname" for item in spread):
            wrong.append(f"{service}: no spread over nodes")
    for account in of_kind(manifests, "ServiceAccount").values():
        if account.get("automountServiceAccountToken") is not False:
            wrong.append(f"ServiceAccount {account['metadata']['name']}: token automounted")
    return wrong


def secrets_in_config(manifests: list[Manifest]) -> list[str]:
    wrong = []
    for config_map in of_kind(manifests, "ConfigMap").values():
        for key in config_map.get("data", {}):
            if any(word in key.upper() for word in SECRET_LOOKING):
                wrong.append(f"{config_map['metadata']['name']}: {key} looks like a credential")
    for deployment in of_kind(manifests, "Deployment").values():
        for item in container(deployment)["env"]:
            if any(word in item["name"] for word in SECRET_LOOKING) and "secretKeyRef" not in item.get(
                "valueFrom", {}
            ):
                wrong.append(f"{service_of(deployment)}: {item['name']} not from a Secret")
    return wrong


def short_grace(manifests: list[Manifest]) -> list[str]:
    wrong = []
    for deployment in of_kind(manifests, "Deployment").values():
        drain = float(
            config_of(manifests, deployment).get(
                "VOICE_SHUTDOWN_GRACE_SECONDS", CommonSettings.model_fields["shutdown_grace_seconds"].default
            )
        )
        grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if grace <= drain:
            wrong.append(f"{service_of(deployment)}: terminationGracePeriodSeconds {grace} <= drain {drain}")
    return wrong


CHECKS: list[Callable[[list[Manifest]], list[str]]] = [
    unknown_variables,
    port_mismatches,
    target_mismatches,
    hardening_gaps,
    secrets_in_config,
    short_grace,
]


# --- the tests -------------------------------------------------------------------------------------------------


def test_every_service_has_its_objects(manifests: list[Manifest]) -> None:
    for service in SETTINGS:
        name = f"voice-{service}"
        for kind in ("Deployment", "Service", "ServiceAccount"):
            assert name in of_kind(manifests, kind), f"no {kind} {name}"
        assert container(of_kind(manifests, "Deployment")[name])["image"] == f"voice-{service}:dev"
    for item in manifests:
        assert item["metadata"]["labels"]["app.kubernetes.io/part-of"] == "voice-platform", item["metadata"]
    assert not of_kind(manifests, "Secret"), "the base references Secrets; overlays create them"
    assert not of_kind(manifests, "PersistentVolumeClaim"), (
        "the base references voice-models; overlays create it"
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_schema_valid(manifests: list[Manifest], version: str) -> None:
    for item in manifests:
        kubernetes_validate.validate(item, version, strict=True)


def test_schema_catches_unknown_field(manifests: list[Manifest]) -> None:
    broken = copy.deepcopy(of_kind(manifests, "Deployment")["voice-tts"])
    container(broken)["securityContext"]["readOnlyRootFileSystem"] = True  # a capital S: not a field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_check_passes(manifests: list[Manifest], check: Callable[[list[Manifest]], list[str]]) -> None:
    assert check(manifests) == []


def _typo_in_config(manifests: list[Manifest]) -> None:
    data = of_kind(manifests, "ConfigMap")["voice-gateway-config"]["data"]
    data["GATEWAY_PROFILE_TARGET"] = data.pop("GATEWAY_PROFILES_TARGET")


def _typo_in_env(manifests: list[Manifest]) -> None:
    container(of_kind(manifests, "Deployment")["voice-profiles"])["env"][0]["name"] = "VOICE_INTERNAL_TOKN"


def _wrong_port(manifests: list[Manifest]) -> None:
    container(of_kind(manifests, "Deployment")["voice-asr"])["ports"][0]["containerPort"] = 50055


def _probe_on_metrics(manifests: list[Manifest]) -> None:
    container(of_kind(manifests, "Deployment")["voice-tts"])["readinessProbe"]["grpc"]["port"] = 9153


def _liveness_on_readiness(manifests: list[Manifest]) -> None:
    del container(of_kind(manifests, "Deployment")["voice-profiles"])["livenessProbe"]["grpc"]["service"]


def _short_startup(manifests: list[Manifest]) -> None:
    container(of_kind(manifests, "Deployment")["voice-tts"])["startupProbe"]["failureThreshold"] = 30


def _target_without_service(manifests: list[Manifest]) -> None:
    of_kind(manifests, "ConfigMap")["voice-gateway-config"]["data"]["GATEWAY_TTS_TARGET"] = (
        "dns:///voice-tss:50053"
    )


def _target_wrong_port(manifests: list[Manifest]) -> None:
    of_kind(manifests, "ConfigMap")["voice-tts-config"]["data"]["TTS_PROFILES_ADDRESS"] = (
        "voice-profiles:50053"
    )


def _not_headless(manifests: list[Manifest]) -> None:
    del of_kind(manifests, "Service")["voice-asr"]["spec"]["clusterIP"]


def _writable_root(manifests: list[Manifest]) -> None:
    container(of_kind(manifests, "Deployment")["voice-gateway"])["securityContext"][
        "readOnlyRootFilesystem"
    ] = False


def _capabilities_kept(manifests: list[Manifest]) -> None:
    del container(of_kind(manifests, "Deployment")["voice-profiles"])["securityContext"]["capabilities"]


def _credential_in_config(manifests: list[Manifest]) -> None:
    of_kind(manifests, "ConfigMap")["voice-profiles-config"]["data"]["VOICE_S3_SECRET_KEY"] = "minio123"


def _grace_below_drain(manifests: list[Manifest]) -> None:
    of_kind(manifests, "Deployment")["voice-asr"]["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ] = 20


@pytest.mark.parametrize(
    ("break_it", "check"),
    [
        (_typo_in_config, unknown_variables),
        (_typo_in_env, unknown_variables),
        (_wrong_port, port_mismatches),
        (_probe_on_metrics, port_mismatches),
        (_liveness_on_readiness, port_mismatches),
        (_short_startup, port_mismatches),
        (_target_without_service, target_mismatches),
        (_target_wrong_port, target_mismatches),
        (_not_headless, target_mismatches),
        (_writable_root, hardening_gaps),
        (_capabilities_kept, hardening_gaps),
        (_credential_in_config, secrets_in_config),
        (_grace_below_drain, short_grace),
    ],
    ids=lambda item: item.__name__.strip("_"),
)
def test_check_catches(
    manifests: list[Manifest],
    break_it: Callable[[list[Manifest]], None],
    check: Callable[[list[Manifest]], list[str]],
) -> None:
    broken = copy.deepcopy(manifests)
    break_it(broken)
    assert check(broken) != []
