"""A peer's server process: its module run in its venv, ready once a real request gets a 200,
measured and stopped with every process it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from benchmarks.peers.catalog import Config
from benchmarks.peers.requests import PeerRequest
from benchmarks.servers import UvicornServer, descendants, running, tree_cpu_seconds

READY_TIMEOUT_S = 300.0  # Ray starts a cluster; every server loads TensorFlow
STOP_TIMEOUT_S = 10.0


class PeerServer(UvicornServer):
    """A peer's server module in the peer's venv, ready once ``probe`` gets a 200."""

    def __init__(
        self, python: Path, config: Config, models: Path, probe: PeerRequest, log_path: Path
    ) -> None:
        super().__init__(config.peer.module, {}, log_path, probe.path)
        self.python, self.config, self.models, self.probe = python, config, models, probe

    def command(self) -> list[str]:
        command = [str(self.python), "-m", self.config.peer.module, "--models", str(self.models)]
        return command + ["--port", str(self.port), "--parallel", str(self.config.parallel)]

    ready_timeout_s = READY_TIMEOUT_S
    ready_poll_s = 1.0

    def _ready(self) -> bool:
        return send(self.base_url, self.probe).status_code == 200

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def stop(self) -> None:
        """The server, then whatever it started that outlived it, then the peer's cleanup."""
        if self.process is None:
            return
        left = descendants(self.pid) if self.process.poll() is None else []
        super().stop()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(map(running, left)) and time.monotonic() < deadline:
            time.sleep(0.1)  # the next server starts only when this one is gone
        if self.config.peer.cleanup:
            subprocess.run(
                [str(self.python), *self.config.peer.cleanup], capture_output=True, check=False
            )


def send(base_url: str, request: PeerRequest) -> httpx.Response:
    # identity: as wrk asks (some servers compress answers for clients that accept gzip)
    headers = {**request.headers, "Accept-Encoding": "identity"}
    return httpx.post(base_url + request.path, content=request.body, headers=headers, timeout=60)
