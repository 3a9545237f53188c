"""Kubernetes manifests in docker/k8s, validated against the API schemas offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from app.settings import Settings

from .deployment_files import (
    K8S_DIR,
    K8S_GPU_PATCH,
    compose_services_with_target,
    containers,
    k8s_manifests,
    last_value,
    load_yaml,
    serving_port,
)

KUBERNETES_VERSION = "1.32"
# The data volume depends on where a cluster keeps the data, so it is left to the operator.
OPERATOR_PROVIDED_CLAIMS = {"cellsign-data"}


def validate(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", k8s_manifests(), ids=lambda path: path.name)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    validate(load_yaml(path))


def test_schema_check_would_catch_a_misspelt_field() -> None:
    deployment = load_yaml(K8S_DIR / "deployment-api.yaml")
    containers(deployment)[0]["readinesProbe"] = containers(deployment)[0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_kustomizations_name_existing_files() -> None:
    for kustomization in K8S_DIR.rglob("kustomization.yaml"):
        spec = load_yaml(kustomization)
        listed = spec.get("resources", []) + [patch["path"] for patch in spec.get("patches", [])]
        for name in listed:
            assert (kustomization.parent / name).exists(), f"{kustomization}: {name}"


def api_container() -> dict[str, Any]:
    (container,) = containers(load_yaml(K8S_DIR / "deployment-api.yaml"))
    return container


def test_probes_use_readiness_and_health_endpoints_on_the_serving_port() -> None:
    container = api_container()
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": serving_port()}]
    service = load_yaml(K8S_DIR / "service.yaml")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_graceful_shutdown_ends_before_the_kubelet_kills_the_pod() -> None:
    pod = load_yaml(K8S_DIR / "deployment-api.yaml")["spec"]["template"]["spec"]
    env = {variable["name"]: variable["value"] for variable in api_container()["env"]}
    graceful_s = int(env.get("GRACEFUL_SHUTDOWN_S", Settings().graceful_shutdown_s))
    assert graceful_s < pod.get("terminationGracePeriodSeconds", 30)


@pytest.mark.parametrize("name", ["deployment-api.yaml", "job-train.yaml"])
def test_pods_run_as_the_images_user(name: str) -> None:
    pod = load_yaml(K8S_DIR / name)["spec"]["template"]["spec"]
    image_user = (last_value("api-cpu", "USER") or "").split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == image_user


def test_every_claim_is_defined_here_or_left_to_the_operator() -> None:
    defined = set()
    claimed = set()
    for path in k8s_manifests():
        resource = load_yaml(path)
        if resource["kind"] == "PersistentVolumeClaim":
            defined.add(resource["metadata"]["name"])
        for volume in (
            resource.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", [])
        ):
            claimed.add(volume["persistentVolumeClaim"]["claimName"])
    assert claimed - defined == OPERATOR_PROVIDED_CLAIMS


def test_images_are_the_ones_compose_builds() -> None:
    compose_images = {
        service["image"]
        for target in ("api-cpu", "train")
        for service in compose_services_with_target(target).values()
    }
    for path in k8s_manifests():
        for container in containers(load_yaml(path)):
            assert container["image"] in compose_images, f"{path.name}: {container['image']}"


def strategic_merge(base: Any, patch: Any) -> Any:
    """The part of kustomize's strategic merge this overlay uses: maps merge key by key,
    lists of named maps (containers, env) merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    named = isinstance(base, list) and isinstance(patch, list)
    if named and all(isinstance(item, dict) and "name" in item for item in base + patch):
        merged_list = list(base)
        positions = {item["name"]: index for index, item in enumerate(merged_list)}
        for item in patch:
            if item["name"] in positions:
                position = positions[item["name"]]
                merged_list[position] = strategic_merge(merged_list[position], item)
            else:
                merged_list.append(item)
        return merged_list
    return patch


def gpu_deployment() -> dict[str, Any]:
    """deployment-api.yaml as the gpu overlay renders it (image tag and patch applied)."""
    overlay = load_yaml(K8S_GPU_PATCH.parent / "kustomization.yaml")
    deployment = strategic_merge(
        load_yaml(K8S_DIR / "deployment-api.yaml"), load_yaml(K8S_GPU_PATCH)
    )
    for container in containers(deployment):
        repository = container["image"].split(":")[0]
        for image in overlay["images"]:
            if image["name"] == repository:
                container["image"] = f"{repository}:{image['newTag']}"
    return deployment


def test_gpu_overlay_renders_a_valid_deployment_with_one_gpu() -> None:
    deployment = gpu_deployment()
    validate(deployment)
    (container,) = containers(deployment)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "DEVICE", "value": "gpu"} in container["env"]
    assert container["readinessProbe"] == api_container()["readinessProbe"]
    gpu_images = {service["image"] for service in compose_services_with_target("api-gpu").values()}
    assert container["image"] in gpu_images
