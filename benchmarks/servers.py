"""Start a real ``uvicorn`` subprocess on 127.0.0.1 and read its memory and CPU from /proc."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from benchmarks import REPO_ROOT

READY_TIMEOUT_S = 180.0
WORKERS_READY_TIMEOUT_S = 300.0  # several workers each load every model
# uvicorn's access log off, its own messages at warning and above.
QUIET_UVICORN_ARGS = ("--no-access-log", "--log-level", "warning")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` (Linux ``/proc``)."""
    return _status_mib(pid, "VmRSS")


def _status_mib(pid: int, field: str) -> float:
    """A memory ``field`` of ``/proc/PID/status`` (given there in KiB), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used so far, all threads (Linux ``/proc``)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of every live descendant: a server's worker processes, a
    Triton or Ray server's helper processes. One that exits meanwhile counts for nothing."""
    total = 0.0
    for each in (pid, *descendants(pid)):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(each)
    return total


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid``, from one pass over every process's parent id
    in ``/proc``: a server's threads come and go, so a walk over its per-thread ``children``
    files can lose a thread, and the children with it, halfway."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat_fields(entry.name)[1])
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children.get(parent, [])]
        found += frontier
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has finished; it only awaits its parent)."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class UvicornServer:
    """``uvicorn APP`` with one worker, as a context manager that waits for readiness.

    The access logs (uvicorn's and the app's, ``ACCESS_LOG``) are off for every server
    measured here, so none of them pays for printing a line per request; everything else is
    the app's own configuration. ``env`` and ``uvicorn_args`` may turn them back on.
    """

    def __init__(
        self,
        app: str,
        env: dict[str, str],
        log_path: Path,
        ready_path: str,
        uvicorn_args: Sequence[str] = QUIET_UVICORN_ARGS,
    ) -> None:
        self.app = app
        self.port = free_port()
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "ACCESS_LOG": "false", **env}
        self.uvicorn_args = list(uvicorn_args)
        self.log_path = log_path
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0
        self.cwd = REPO_ROOT  # the code served is the one in this folder

    @property
    def started(self) -> subprocess.Popen[bytes]:
        """The server's process; RuntimeError before it is started."""
        if self.process is None:
            raise RuntimeError("server not started")
        return self.process

    @property
    def pid(self) -> int:
        return self.started.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1"]
        return command + ["--port", str(self.port), *self.uvicorn_args]

    def __enter__(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            start = time.perf_counter()
            self.process = subprocess.Popen(
                self.command(), cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    ready_timeout_s = READY_TIMEOUT_S
    ready_poll_s = 0.25

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited; see {self.log_path}:\n{self.log_tail()}")
            try:
                if self._ready():
                    return
            except httpx.TransportError:
                pass
            time.sleep(self.ready_poll_s)
        raise TimeoutError(f"{self.app} not ready after {self.ready_timeout_s:.0f} s")

    def _ready(self) -> bool:
        """One readiness check (a transport error counts as not ready)."""
        return httpx.get(self.base_url + self.ready_path, timeout=2).status_code == 200

    def log_tail(self, characters: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class AppServer(UvicornServer):
    """``python -m app``, the production command: every setting (HOST and PORT included)
    comes from the environment, so its limits are the ones a deployment gets. One worker
    process unless ``env`` sets WORKERS, so that ``pid`` is the process that serves."""

    def __init__(self, env: dict[str, str], log_path: Path, ready_path: str = "/readyz") -> None:
        super().__init__("app", {"WORKERS": "1", **env}, log_path, ready_path)
        self.env |= {"HOST": "127.0.0.1", "PORT": str(self.port)}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "app"]


class WorkersServer(AppServer):
    """``python -m app`` with ``workers`` processes, ready once every worker serves."""

    def __init__(self, models: Path, workers: int, log_path: Path) -> None:
        env = {
            "MODEL_DIR": str(models),
            "WORKERS": str(workers),
            "RELOAD_INTERVAL_S": "0",
            "LOG_LEVEL": "warning",
        }
        super().__init__(env, log_path)
        self.workers = workers

    ready_timeout_s = WORKERS_READY_TIMEOUT_S
    ready_poll_s = 0.5

    def _ready(self) -> bool:
        """Every worker's classifier is loaded: one series per worker under several workers."""
        text = httpx.get(self.base_url + "/metrics", timeout=5).text
        series = r'cellsign_model_version\{model="signs_classifier"[^}]*\} (\S+)'
        versions = re.findall(series, text)
        return sum(float(version) > 0 for version in versions) >= self.workers

    def cpu_seconds(self) -> float:
        """The supervisor and every worker process (their children, from /proc)."""
        return tree_cpu_seconds(self.pid)


def peak_rss_mib(pid: int) -> float:
    """The most ``pid`` has held resident since it started, or since ``reset_peak_rss``."""
    return _status_mib(pid, "VmHWM")


def reset_peak_rss(pid: int) -> bool:
    """Set ``pid``'s peak resident size back to its current one (Linux 4.0+, same user),
    so that ``peak_rss_mib`` then shows what one request made it hold at most; False
    where the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def worker_pids(supervisor: int) -> list[int]:
    """The worker processes of a ``python -m app`` supervisor: its children, less the
    multiprocessing resource tracker."""
    workers = []
    for pid in descendants(supervisor):
        try:
            parent = int(_stat_fields(pid)[1])
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if parent == supervisor and b"resource_tracker" not in command:
            workers.append(pid)
    return sorted(workers)
