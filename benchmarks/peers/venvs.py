"""One virtual environment per peer server, created on demand and reused.

The peers pin libraries that cannot share one environment (PyTriton needs numpy 1.x, Ray
and BentoML pin their own web stacks), and none of them belongs in the project's own
dependencies, so each gets a venv under ``build/peers/<name>/venv`` (``/build/`` is git
ignored). A marker file holds the requirement list the venv was built from: the same list
later reuses it, a changed list rebuilds it. pip's own cache keeps the wheels, so a rebuild
costs the install, not the download.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks import REPO_ROOT

VENVS_ROOT = REPO_ROOT / "build" / "peers"
MARKER = "requirements.installed"
INSTALL_TIMEOUT_S = 1800
# The model and the decoder are the same in every peer: the project's own TensorFlow and
# Pillow versions (tensorflow-cpu: the same wheel without the CUDA libraries).
COMMON_REQUIREMENTS = ("tensorflow-cpu==2.21.0", "pillow==13.0.0")


def venv_python(name: str, requirements: tuple[str, ...], root: Path = VENVS_ROOT) -> Path:
    """The interpreter of ``name``'s venv, installing ``requirements`` first if needed."""
    home = root / name
    python = home / "venv" / "bin" / "python"
    marker = home / MARKER
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    print(f"installing {name} into {home / 'venv'} (once): {' '.join(requirements)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements], check=True, timeout=INSTALL_TIMEOUT_S)
    marker.write_text(wanted)  # last: an interrupted install is redone next time
    return python


def venv_size_mib(name: str, root: Path = VENVS_ROOT) -> float:
    """Disk space of ``name``'s venv (0 when not installed)."""
    venv = root / name / "venv"
    if not venv.exists():
        return 0.0
    return sum(path.stat().st_size for path in venv.rglob("*") if path.is_file()) / 2**20
