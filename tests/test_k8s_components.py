"""k8s/components rendered on top of k8s/base the way an overlay uses them, validated against Kubernetes' schemas
and checked: the GPU component changes TTS and ASR only and sets only real settings; the network policies deny by
default, open only container ports of the pods they select, select only pods that exist, and allow exactly the
connections of the expected matrix. Each check also runs on a broken copy, so none can pass by not looking."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from test_k8s_manifests import (
    KUBERNETES_VERSIONS,
    REPO,
    Manifest,
    config_of,
    container,
    of_kind,
    port_mismatches,
    render,
    service_of,
    unknown_variables,
)

# Pods outside the base the policies talk to: the in-cluster stores, by the labels their charts set.
STORE_PODS = {
    "minio": {"app.kubernetes.io/name": "minio"},
    "postgresql": {"app.kubernetes.io/name": "postgresql"},
}
GPU_SERVICES = ("tts", "asr")


def render_with(component: str, tmp_path: Path) -> list[Manifest]:
    # kustomize refuses absolute paths to a base, so the tree is copied and named relatively.
    shutil.copytree(REPO / "k8s", tmp_path / "k8s")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["../k8s/base"], "components": [f"../k8s/components/{component}"]})
    )
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) must be on PATH"
    rendered = subprocess.run(
        [kubectl, "kustomize", str(overlay)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return render()


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    return render_with("gpu", tmp_path_factory.mktemp("gpu"))


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    return render_with("network-policies", tmp_path_factory.mktemp("network-policies"))


# --- GPU ------------------------------------------------------------------------------------------------------


def gpu_gaps(manifests: list[Manifest], base: list[Manifest]) -> list[str]:
    wrong = unknown_variables(manifests)
    base_deployments = of_kind(base, "Deployment")
    for name, deployment in of_kind(manifests, "Deployment").items():
        service = service_of(deployment)
        if service not in GPU_SERVICES:
            if deployment != base_deployments[name]:
                wrong.append(f"{service}: changed by the GPU component")
            continue
        pod = deployment["spec"]["template"]["spec"]
        resources = container(deployment)["resources"]
        if str(resources.get("limits", {}).get("nvidia.com/gpu")) != "1":
            wrong.append(f"{service}: no nvidia.com/gpu: 1 limit")
        request = resources.get("requests", {}).get("nvidia.com/gpu")
        if request is not None and str(request) != "1":
            wrong.append(f"{service}: GPU request differs from the limit")
        toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        if toleration not in pod.get("tolerations", []):
            wrong.append(f"{service}: no nvidia.com/gpu toleration")
        terms = (
            pod.get("affinity", {})
            .get("nodeAffinity", {})
            .get("requiredDuringSchedulingIgnoredDuringExecution", {})
            .get("nodeSelectorTerms", [])
        )
        wanted = {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
        if not terms or not all(wanted in term.get("matchExpressions", []) for term in terms):
            wrong.append(f"{service}: not required on nvidia.com/gpu.present=true nodes")
        mounts = {
            mount["mountPath"]: mount["name"] for mount in container(deployment).get("volumeMounts", [])
        }
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        shm = volumes.get(mounts.get("/dev/shm", ""), {}).get("emptyDir", {})
        if shm.get("medium") != "Memory" or "sizeLimit" not in shm:
            wrong.append(f"{service}: /dev/shm is not a size-limited memory emptyDir")
        if config_of(manifests, deployment).get(f"{service.upper()}_DEVICE") != "cuda":
            wrong.append(f"{service}: the device setting is not cuda")
    return wrong


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_gpu_schema_valid(gpu: list[Manifest], version: str) -> None:
    for item in gpu:
        kubernetes_validate.validate(item, version, strict=True)


def test_gpu_component(gpu: list[Manifest], base: list[Manifest]) -> None:
    assert gpu_gaps(gpu, base) == []


def _gpu_on_gateway(manifests: list[Manifest]) -> None:
    container(of_kind(manifests, "Deployment")["voice-gateway"])["resources"]["limits"]["nvidia.com/gpu"] = 1


def _device_typo(manifests: list[Manifest]) -> None:
    data = of_kind(manifests, "ConfigMap")["voice-asr-config"]["data"]
    data["ASR_DEVICES"] = data.pop("ASR_DEVICE")


def _shm_on_disk(manifests: list[Manifest]) -> None:
    for volume in of_kind(manifests, "Deployment")["voice-tts"]["spec"]["template"]["spec"]["volumes"]:
        volume.get("emptyDir", {}).pop("medium", None)


def _no_toleration(manifests: list[Manifest]) -> None:
    del of_kind(manifests, "Deployment")["voice-asr"]["spec"]["template"]["spec"]["tolerations"]


@pytest.mark.parametrize(
    "break_it",
    [_gpu_on_gateway, _device_typo, _shm_on_disk, _no_toleration],
    ids=lambda item: item.__name__.strip("_"),
)
def test_gpu_check_catches(
    gpu: list[Manifest], base: list[Manifest], break_it: Callable[[list[Manifest]], None]
) -> None:
    broken = copy.deepcopy(gpu)
    break_it(broken)
    assert gpu_gaps(broken, base) != []


# --- network policies -----------------------------------------------------------------------------------------

Triple = tuple[str, str, str]


def pods_of(manifests: list[Manifest]) -> dict[str, dict[str, str]]:
    pods = {
        service_of(deployment): deployment["spec"]["template"]["metadata"]["labels"]
        for deployment in of_kind(manifests, "Deployment").values()
    }
    return pods | STORE_PODS


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", "only In is understood here"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def selected(selector: dict[str, Any], pods: dict[str, dict[str, str]]) -> list[str]:
    return [name for name, labels in pods.items() if matches(selector, labels)]


def peers(rule_peers: list[dict[str, Any]] | None, pods: dict[str, dict[str, str]]) -> list[str]:
    if rule_peers is None:
        return ["any"]
    names = []
    for peer in rule_peers:
        if "namespaceSelector" in peer:
            assert "podSelector" not in peer, "namespace and pod selectors together are not expected"
            names.append(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
        else:
            names += selected(peer["podSelector"], pods)
    return names


def allowed(manifests: list[Manifest]) -> tuple[set[Triple], set[Triple]]:
    """(from, to, port/protocol) for ingress and egress, each as its own policies allow it."""
    pods = pods_of(manifests)
    ingress: set[Triple] = set()
    egress: set[Triple] = set()
    for policy in of_kind(manifests, "NetworkPolicy").values():
        spec = policy["spec"]
        for pod in selected(spec["podSelector"], pods):
            for rule in spec.get("ingress", []):
                for source in peers(rule.get("from"), pods):
                    for port in rule["ports"]:
                        ingress.add((source, pod, f"{port['port']}/{port['protocol']}"))
            for rule in spec.get("egress", []):
                for target in peers(rule.get("to"), pods):
                    for port in rule["ports"]:
                        egress.add((pod, target, f"{port['port']}/{port['protocol']}"))
    return ingress, egress


PLATFORM = ("gateway", "profiles", "tts", "asr")
GRPC = {"gateway": "50051/TCP", "profiles": "50052/TCP", "tts": "50053/TCP", "asr": "50054/TCP"}
CALLS = {
    ("gateway", "profiles"),
    ("gateway", "tts"),
    ("gateway", "asr"),
    ("tts", "profiles"),
    ("asr", "profiles"),
    ("profiles", "asr"),
}
STORE_CALLS = {
    ("profiles", "minio", "9000/TCP"),
    ("tts", "minio", "9000/TCP"),
    ("profiles", "postgresql", "5432/TCP"),
}
EXPECTED_INGRESS = (
    # The public entry: gRPC and the OpenAI-compatible HTTP face.
    {("any", "gateway", "50051/TCP"), ("any", "gateway", "8080/TCP")}
    | {(caller, callee, GRPC[callee]) for caller, callee in CALLS}
    | {("monitoring", service, f"915{index}/TCP") for index, service in enumerate(PLATFORM, start=1)}
    | STORE_CALLS
)
EXPECTED_EGRESS = (
    {(caller, callee, GRPC[callee]) for caller, callee in CALLS}
    | STORE_CALLS
    | {(service, "kube-system", f"53/{protocol}") for service in PLATFORM for protocol in ("UDP", "TCP")}
)


def policy_gaps(manifests: list[Manifest]) -> list[str]:
    wrong = []
    policies = of_kind(manifests, "NetworkPolicy").values()
    pods = pods_of(manifests)
    for direction in ("Ingress", "Egress"):
        denies = [
            policy
            for policy in policies
            if direction in policy["spec"].get("policyTypes", [])
            and not policy["spec"].get(direction.lower())
            and set(selected(policy["spec"]["podSelector"], pods)) >= set(PLATFORM)
        ]
        if not denies:
            wrong.append(f"no default deny of {direction} for every platform pod")
    for policy in policies:
        spec = policy["spec"]
        name = policy["metadata"]["name"]
        if not selected(spec["podSelector"], pods):
            wrong.append(f"{name}: its podSelector matches no pod")
        for rule in spec.get("ingress", []) + spec.get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "podSelector" in peer and not selected(peer["podSelector"], pods):
                    wrong.append(f"{name}: a peer podSelector matches no pod")
    deployments = {service_of(item): item for item in of_kind(manifests, "Deployment").values()}
    ingress, egress = allowed(manifests)
    for _, pod, port in ingress:
        if pod in deployments:
            ports = {
                f"{item['containerPort']}/{item['protocol']}" for item in container(deployments[pod])["ports"]
            }
            if port not in ports:
                wrong.append(f"{pod}: ingress on {port}, not a container port")
    wrong += [f"unexpected ingress {triple}" for triple in sorted(ingress - EXPECTED_INGRESS)]
    wrong += [f"missing ingress {triple}" for triple in sorted(EXPECTED_INGRESS - ingress)]
    wrong += [f"unexpected egress {triple}" for triple in sorted(egress - EXPECTED_EGRESS)]
    wrong += [f"missing egress {triple}" for triple in sorted(EXPECTED_EGRESS - egress)]
    return wrong


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_policies_schema_valid(policies: list[Manifest], version: str) -> None:
    for item in policies:
        kubernetes_validate.validate(item, version, strict=True)


def test_policies(policies: list[Manifest]) -> None:
    assert policy_gaps(policies) == []


def test_every_in_namespace_call_is_open_at_both_ends(policies: list[Manifest]) -> None:
    ingress, egress = allowed(policies)
    in_namespace = set(pods_of(policies))
    assert {triple for triple in egress if triple[1] in in_namespace} <= ingress
    assert {triple for triple in ingress if triple[0] in in_namespace} <= egress


def _selects_nonexistent(manifests: list[Manifest]) -> None:
    of_kind(manifests, "NetworkPolicy")["voice-tts"]["spec"]["podSelector"]["matchLabels"] = {
        "app.kubernetes.io/name": "voice-ttts"
    }


def _peer_nonexistent(manifests: list[Manifest]) -> None:
    rule = of_kind(manifests, "NetworkPolicy")["voice-asr"]["spec"]["egress"][0]
    rule["to"][0]["podSelector"]["matchLabels"] = {"app.kubernetes.io/name": "profiles"}


def _no_default_deny(manifests: list[Manifest]) -> None:
    of_kind(manifests, "NetworkPolicy")["voice-default-deny"]["spec"]["policyTypes"] = ["Ingress"]


def _wrong_port(manifests: list[Manifest]) -> None:
    of_kind(manifests, "NetworkPolicy")["voice-tts"]["spec"]["ingress"][0]["ports"][0]["port"] = 50052


def _extra_caller(manifests: list[Manifest]) -> None:
    rule = of_kind(manifests, "NetworkPolicy")["voice-asr"]["spec"]["ingress"][0]
    rule["from"][0]["podSelector"]["matchExpressions"][0]["values"].append("voice-tts")


@pytest.mark.parametrize(
    "break_it",
    [_selects_nonexistent, _peer_nonexistent, _no_default_deny, _wrong_port, _extra_caller],
    ids=lambda item: item.__name__.strip("_"),
)
def test_policy_check_catches(policies: list[Manifest], break_it: Callable[[list[Manifest]], None]) -> None:
    broken = copy.deepcopy(policies)
    break_it(broken)
    assert policy_gaps(broken) != []


# --- internal mutual TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    return render_with("internal-mtls", tmp_path_factory.mktemp("internal-mtls"))


def mtls_gaps(manifests: list[Manifest]) -> list[str]:
    """Each service mounts its own certificate Secret where its TLS settings point, its probes moved to the
    plaintext health port (checked by port_mismatches with the rest of the ports), and the token stays."""
    wrong = unknown_variables(manifests) + port_mismatches(manifests)
    for deployment in of_kind(manifests, "Deployment").values():
        service = service_of(deployment)
        config = config_of(manifests, deployment)
        files = [config.get(f"VOICE_INTERNAL_TLS_{part}_FILE", "") for part in ("CERT", "KEY", "CA")]
        if not all(files):
            wrong.append(f"{service}: the TLS settings are not all set: {files}")
            continue
        pod = deployment["spec"]["template"]["spec"]
        secrets = {
            volume["name"]: volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume
        }
        mounts = {
            mount["mountPath"]: mount["name"] for mount in container(deployment).get("volumeMounts", [])
        }
        for path in files:
            volume = mounts.get(str(Path(path).parent))
            if secrets.get(volume or "") != f"voice-{service}-internal-tls":
                wrong.append(f"{service}: {path} is not in the Secret voice-{service}-internal-tls")
        if not int(config.get("VOICE_HEALTH_PORT", 0)):
            wrong.append(f"{service}: no plaintext health port for the probes (the service port is TLS only)")
        env = {variable["name"] for variable in container(deployment).get("env", [])}
        if "VOICE_INTERNAL_TOKEN" not in env:
            wrong.append(f"{service}: the internal token was dropped")
    return wrong


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_mtls_schema_valid(mtls: list[Manifest], version: str) -> None:
    for item in mtls:
        kubernetes_validate.validate(item, version, strict=True)


def test_mtls_component(mtls: list[Manifest]) -> None:
    assert mtls_gaps(mtls) == []


def _probe_on_the_tls_port(manifests: list[Manifest]) -> None:
    container(of_kind(manifests, "Deployment")["voice-tts"])["livenessProbe"]["grpc"]["port"] = 50053


def _another_services_certificate(manifests: list[Manifest]) -> None:
    for volume in of_kind(manifests, "Deployment")["voice-asr"]["spec"]["template"]["spec"]["volumes"]:
        if "secret" in volume:
            volume["secret"]["secretName"] = "voice-profiles-internal-tls"


def _ca_elsewhere(manifests: list[Manifest]) -> None:
    of_kind(manifests, "ConfigMap")["voice-gateway-config"]["data"]["VOICE_INTERNAL_TLS_CA_FILE"] = (
        "/etc/ca.crt"
    )


@pytest.mark.parametrize(
    "break_it",
    [_probe_on_the_tls_port, _another_services_certificate, _ca_elsewhere],
    ids=lambda item: item.__name__.strip("_"),
)
def test_mtls_check_catches(mtls: list[Manifest], break_it: Callable[[list[Manifest]], None]) -> None:
    broken = copy.deepcopy(mtls)
    break_it(broken)
    assert mtls_gaps(broken) != []
