"""Readers for the deployment files (Dockerfile stages, compose, Kubernetes manifests).

The tests in this folder check these files without a Docker engine, so they need the same
small views of them: a Dockerfile target's instructions with its parent stages folded in,
the compose file as a dict, the manifests as documents.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
NGINX_CONF = DOCKER_DIR / "nginx" / "cellsign.conf"
PROMETHEUS_CONF = DOCKER_DIR / "prometheus" / "prometheus.yml"
K8S_DIR = DOCKER_DIR / "k8s"
K8S_GPU_PATCH = K8S_DIR / "gpu" / "deployment-api-gpu.yaml"
DEPLOYMENT_README = DOCKER_DIR / "README.md"

TARGETS = ("api-cpu", "api-gpu", "train")
API_TARGETS = ("api-cpu", "api-gpu")


@dataclass
class Stage:
    """One ``FROM ... AS name`` block: its base (a stage name or an image) and instructions."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@cache
def dockerfile_stages() -> dict[str, Stage]:
    """Stages in file order (dicts keep insertion order, so the last one is the default)."""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for item in DockerfileParser(path=str(DOCKERFILE)).structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            base, _, name = value.partition(" AS ")
            current = Stage(name=name.strip(), base=base.strip())
            stages[current.name] = current
        elif current is not None and instruction != "COMMENT":
            current.instructions.append((instruction, value))
    return stages


def target_instructions(target: str) -> list[tuple[str, str]]:
    """Every instruction that shapes ``target``'s image, from its first ancestor stage on."""
    stages = dockerfile_stages()
    chain = []
    name = target
    while name in stages:
        chain.append(stages[name])
        name = stages[name].base
    return [pair for stage in reversed(chain) for pair in stage.instructions]


def last_value(target: str, instruction: str) -> str | None:
    """The value of the last ``instruction`` (USER, CMD, ...) that ``target`` inherits."""
    values = [value for kind, value in target_instructions(target) if kind == instruction]
    return values[-1] if values else None


def environment(target: str) -> dict[str, str]:
    """``ENV`` settings of ``target``, later ones overriding earlier ones."""
    settings: dict[str, str] = {}
    for kind, value in target_instructions(target):
        if kind == "ENV":
            for assignment in shlex.split(value):
                key, _, setting = assignment.partition("=")
                settings[key] = setting
    return settings


def exec_form(value: str) -> list[str]:
    """A JSON-array instruction value (CMD, ENTRYPOINT) as a list; shell form is refused."""
    parsed = json.loads(value)
    if not isinstance(parsed, list):
        raise ValueError(f"expected the exec (JSON array) form, got {value!r}")
    return parsed


SERVER_COMMAND = ["python", "-m", "app"]  # the production server (app/__main__.py)
SERVE_SCRIPT = REPO_ROOT / "scripts" / "serve.sh"


def serving_port() -> int:
    """The port the API server listens on: the API images' ``PORT`` setting."""
    return int(environment("api-cpu")["PORT"])


def healthcheck_command(target: str) -> list[str]:
    """The command of ``target``'s ``HEALTHCHECK ... CMD [...]``."""
    value = last_value(target, "HEALTHCHECK")
    if value is None:
        raise ValueError(f"target {target} has no HEALTHCHECK")
    _, _, command = value.partition(" CMD ")
    return exec_form(command.strip())


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_services_with_target(target: str) -> dict[str, dict[str, Any]]:
    """Compose services built from ``target`` of docker/Dockerfile."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("build", {}).get("target") == target
    }


def k8s_manifests() -> list[Path]:
    """Kubernetes resources in docker/k8s (kustomizations and patches are not resources)."""
    return sorted(path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml")


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """Containers of a Deployment or Job (empty for other kinds)."""
    return resource.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
