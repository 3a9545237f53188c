"""Everything the deployment files name must exist in the project: settings, CLI arguments,
modules, HTTP paths, the port. A renamed flag or setting fails here, not in production."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from app.settings import Settings
from training.cli import build_parser

from .deployment_files import (
    API_TARGETS,
    DEPLOYMENT_README,
    K8S_DIR,
    K8S_GPU_PATCH,
    PROMETHEUS_CONF,
    REPO_ROOT,
    SERVE_SCRIPT,
    SERVER_COMMAND,
    TARGETS,
    compose,
    compose_services_with_target,
    containers,
    environment,
    exec_form,
    healthcheck_command,
    k8s_manifests,
    last_value,
    load_yaml,
    serving_port,
)

# Variables read by Python and pip themselves, not by the project.
PLATFORM_VARIABLES = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"} | {
    "PIP_DISABLE_PIP_VERSION_CHECK"
}
SETTINGS_VARIABLES = {name.upper() for name in Settings.model_fields}


def python_sources(package: str) -> str:
    return "\n".join(path.read_text() for path in (REPO_ROOT / package).rglob("*.py"))


def named_environment_variables() -> dict[str, str]:
    """Every variable the deployment files set, with where it is set."""
    names = {}
    for service_name, service in compose()["services"].items():
        for name in service.get("environment", {}):
            names[name] = f"docker-compose.yml service {service_name}"
    for target in TARGETS:
        for name in environment(target):
            names[name] = f"Dockerfile target {target}"
    for path in [*k8s_manifests(), K8S_GPU_PATCH]:
        for container in containers(load_yaml(path)):
            for variable in container.get("env", []):
                names[variable["name"]] = str(path.relative_to(REPO_ROOT))
    return names


def test_every_environment_variable_is_read_by_the_project() -> None:
    training_sources = python_sources("training")
    for name, where in named_environment_variables().items():
        known = (
            name in PLATFORM_VARIABLES
            or name in SETTINGS_VARIABLES
            or f'"{name}"' in training_sources
        )
        assert known, f"{where} sets {name}, which neither app.settings nor training/ reads"


def test_compose_passes_every_setting_to_the_api() -> None:
    for target in API_TARGETS:
        for name, service in compose_services_with_target(target).items():
            missing = SETTINGS_VARIABLES - set(service["environment"])
            assert not missing, f"{name} does not pass {sorted(missing)} (add them to compose)"


def test_settings_page_names_every_setting() -> None:
    page = (REPO_ROOT / "docs" / "settings.md").read_text()
    missing = {name for name in SETTINGS_VARIABLES if f"`{name}`" not in page}
    assert not missing, f"docs/settings.md does not describe {sorted(missing)}"


def training_command_lines() -> dict[str, list[str]]:
    """``python -m training`` arguments found in compose, the Dockerfile, k8s and the docs."""
    lines = {"Dockerfile train CMD": exec_form(last_value("train", "CMD") or "[]")}
    for name, service in compose_services_with_target("train").items():
        lines[f"compose service {name}"] = service["command"]
    job = load_yaml(K8S_DIR / "job-train.yaml")
    lines["k8s job-train.yaml"] = containers(job)[0]["args"]
    documented = re.findall(
        r"(?:-m training|run --rm train) ([^`#\n]+)", DEPLOYMENT_README.read_text()
    )
    for number, text in enumerate(documented):
        lines[f"docker/README.md example {number + 1}: {text.strip()}"] = shlex.split(text)
    return lines


@pytest.mark.parametrize("where", list(training_command_lines()))
def test_training_command_line_is_accepted_by_the_cli(where: str) -> None:
    arguments = training_command_lines()[where]
    try:
        parsed = build_parser().parse_args(arguments)
    except SystemExit:
        pytest.fail(f"{where}: python -m training rejects {arguments}")
    assert parsed.data == Path("/data") and parsed.out.is_absolute(), where


def server_command_lines() -> dict[str, list[str]]:
    """How each deployment starts the API server."""
    lines = {f"Dockerfile {t} CMD": exec_form(last_value(t, "CMD") or "[]") for t in API_TARGETS}
    for target in API_TARGETS:
        for name, service in compose_services_with_target(target).items():
            lines[f"compose service {name}"] = service.get(
                "command", lines["Dockerfile api-cpu CMD"]
            )
    lines["k8s deployment-api.yaml"] = containers(load_yaml(K8S_DIR / "deployment-api.yaml"))[0][
        "command"
    ]
    # serve.sh starts the server in two places: alone (exec) and beside a training run (&).
    starts = [
        shlex.split(line.replace("exec ", "").rstrip("& "))
        for line in SERVE_SCRIPT.read_text().splitlines()
        if "-m app" in line and not line.lstrip().startswith("#")
    ]
    assert len(starts) == 2, starts
    for number, command in enumerate(starts, 1):
        lines[f"scripts/serve.sh start {number}"] = command
    return lines


@pytest.mark.parametrize("where", list(server_command_lines()))
def test_every_deployment_runs_the_production_server_command(where: str) -> None:
    command = server_command_lines()[where]
    assert [Path(command[0]).name, *command[1:]] == SERVER_COMMAND, f"{where}: {command}"
    assert (REPO_ROOT / "app" / "__main__.py").is_file()


def test_the_development_command_still_finds_the_app_object() -> None:
    """``uvicorn app.main:app`` keeps working for development."""
    module, _, attribute = "app.main:app".partition(":")
    source = REPO_ROOT / (module.replace(".", "/") + ".py")
    assert source.is_file(), f"{source} does not exist"
    assigned = {
        target.id
        for node in ast.parse(source.read_text()).body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    assert attribute in assigned, f"{source} assigns no top-level {attribute!r}"


def test_training_module_is_runnable() -> None:
    entrypoint = exec_form(last_value("train", "ENTRYPOINT") or "[]")
    assert entrypoint[:2] == ["python", "-m"]
    assert (REPO_ROOT / entrypoint[2] / "__main__.py").is_file()


def http_paths_used() -> dict[str, str]:
    paths = {}
    for target in API_TARGETS:
        url = re.search(r"https?://[^'\"]+", healthcheck_command(target)[2])
        assert url is not None
        paths[urlparse(url.group()).path] = f"Dockerfile {target} HEALTHCHECK"
    deployment = load_yaml(K8S_DIR / "deployment-api.yaml")
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        paths[containers(deployment)[0][probe_name]["httpGet"]["path"]] = f"k8s {probe_name}"
    for job in load_yaml(PROMETHEUS_CONF)["scrape_configs"]:
        paths[job["metrics_path"]] = "prometheus.yml"
    return paths


def test_every_probed_http_path_is_served_by_the_app() -> None:
    app_sources = python_sources("app")
    for path, where in http_paths_used().items():
        assert re.search(rf"[\"']{re.escape(path)}[\"']", app_sources), (
            f"{where} uses {path}, which no module in app/ mentions"
        )


def container_ports_in_compose(service: dict[str, Any]) -> set[int]:
    return {int(str(mapping).rsplit(":", 1)[-1]) for mapping in service.get("ports", [])}


def test_one_serving_port_everywhere() -> None:
    port = serving_port()
    for target in API_TARGETS:
        for name, service in compose_services_with_target(target).items():
            assert str(service["environment"]["PORT"]) == str(port), name
    for target in API_TARGETS:
        assert last_value(target, "EXPOSE") == str(port)
        url = re.search(r"https?://[^'\"]+", healthcheck_command(target)[2])
        assert url is not None and urlparse(url.group()).port == port
        for name, service in compose_services_with_target(target).items():
            assert container_ports_in_compose(service) == {port}, name
