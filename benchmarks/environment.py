"""What a benchmark number depends on: machine, versions, devices and the load others put on it.

On a shared machine a throughput figure means little without knowing how many cores other
processes were using meanwhile, so every section is timed inside :class:`OtherLoad`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks import REPO_ROOT
from contract.layout import METADATA_FILE, versions

PACKAGES = ("tensorflow", "keras", "faiss-cpu", "fastapi", "starlette", "uvicorn", "numpy")


def machine_description() -> dict[str, Any]:
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "versions": {name: package_version(name) for name in PACKAGES},
        "gpus": nvidia_gpus(),
        "load_average_at_start": list(os.getloadavg()),
        "git": git_state(),
    }


def git_state() -> str:
    """The commit measured, and whether the serving code had uncommitted changes."""

    def git(*arguments: str) -> str:
        completed = subprocess.run(
            ["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return completed.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", "app", "training")
    return commit + (" with uncommitted changes in app/ or training/" if changed else "")


def models_description(models: Path, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Which versions were measured, with what they were trained on: throughput depends on
    the architecture and input size, the gallery size on the index's training data."""
    described = {}
    for name in names:
        newest = models / name / str(versions(models / name)[-1])
        metadata = json.loads((newest / METADATA_FILE).read_text())
        described[name] = {
            key: metadata[key] for key in ("version", "created", "input", "size") if key in metadata
        }
        data = metadata.get("data", {})
        described[name]["split_sizes"] = data.get("split_sizes") if isinstance(data, dict) else None
    return described


def nvidia_gpus() -> list[str]:
    """GPU names from ``nvidia-smi``; empty where there is none (then no GPU rows exist)."""
    if shutil.which("nvidia-smi") is None:
        return []
    listing = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()]


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (Linux ``/proc/stat``)."""
    with open("/proc/stat", encoding="utf-8") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """This process plus its finished children (servers, load generators)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class OtherLoad:
    """Average cores used by processes outside this benchmark during a ``with`` block.

    Children count only once they have exited, so a block should enclose the whole life
    of the servers and load generators it starts.
    """

    def __init__(self) -> None:
        self.cores = 0.0
        self.wall_s = 0.0

    def __enter__(self) -> OtherLoad:
        self._start = (time.monotonic(), _machine_busy_seconds(), _own_cpu_seconds())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        wall, busy, own = time.monotonic(), _machine_busy_seconds(), _own_cpu_seconds()
        self.wall_s = wall - self._start[0]
        others = (busy - self._start[1]) - (own - self._start[2])
        self.cores = max(0.0, others / self.wall_s) if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, float]:
        return {"wall_s": round(self.wall_s, 1), "other_processes_cores": round(self.cores, 2)}
