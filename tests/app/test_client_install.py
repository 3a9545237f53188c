"""The client installs alone: the base dependencies are httpx's family only, and the client
runs with nothing but those (no TensorFlow, FastAPI, numpy or Pillow to fall back on)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from tests.paths import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
SERVER_ONLY = {"tensorflow", "fastapi", "uvicorn", "numpy", "pillow", "faiss-cpu", "pydantic"}


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower()


def _closure(requirements: list[str]) -> set[str]:
    """The installed distributions ``requirements`` pull in, transitively (no extras)."""
    seen: set[str] = set()
    pending = list(requirements)
    while pending:
        requirement = Requirement(pending.pop())
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = requirement.name.lower()
        if name not in seen:
            seen.add(name)
            pending += importlib.metadata.requires(name) or []
    return seen


def _importable_names(distribution: str) -> set[str]:
    """Top-level modules and packages a distribution installs."""
    names = set()
    for file in importlib.metadata.files(distribution) or []:
        top = file.parts[0]
        if top.endswith((".dist-info", ".pth")) or top in ("..", "__pycache__", "bin"):
            continue
        names.add(top.removesuffix(".py") if len(file.parts) == 1 else top)
    return names


def test_base_dependencies_are_the_clients_and_the_server_ones_are_extras() -> None:
    base = {_name(requirement) for requirement in PYPROJECT["project"]["dependencies"]}
    assert base == {"httpx"}
    extras = PYPROJECT["project"]["optional-dependencies"]
    server = {_name(requirement) for requirement in extras["server"]}
    assert server >= SERVER_ONLY
    assert "tensorflow" in {_name(requirement) for requirement in extras["training"]}


def test_the_client_runs_with_only_its_own_dependencies_importable(tmp_path: Path) -> None:
    """``python -S`` sees no site-packages: only the base dependencies (linked in here) and
    the repository's ``app`` package can be imported."""
    site = tmp_path / "site"
    site.mkdir()
    installed = Path(importlib.metadata.distribution("httpx").locate_file(""))
    for distribution in _closure(PYPROJECT["project"]["dependencies"]):
        assert not SERVER_ONLY & {distribution}, f"the client pulls in {distribution}"
        for name in _importable_names(distribution):
            (site / name).symlink_to(installed / name)
    (site / "app").symlink_to(REPO_ROOT / "app")
    (site / "contract").symlink_to(REPO_ROOT / "contract")
    check = (
        "import sys\n"
        "from app import client\n"
        "try:\n"
        "    client.main(['--help'])\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'tensorflow', 'numpy'}))"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", check],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: cellsign" in result.stdout
    assert result.stdout.strip().endswith("[]")


def test_the_same_check_fails_for_a_module_that_needs_the_server_extras(tmp_path: Path) -> None:
    """The control: without site-packages, importing the server really does fail."""
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import app.main"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr
