"""A real uvicorn process: it serves over TCP and drains in-flight requests on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.app.samples import image_bytes
from tests.conftest import REPO_ROOT

BATCH_WAIT_MS = 3000  # a request waits this long in the batcher: long enough to SIGTERM it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(quick_models: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    port = free_port()
    environment = {
        **os.environ,
        "MODEL_DIR": str(quick_models),
        "DEVICE": "cpu",
        "RELOAD_INTERVAL_S": "0",
        "BATCH_MAX_WAIT_MS": str(BATCH_WAIT_MS),
    }
    log_path = tmp_path / "uvicorn.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"uvicorn exited early: {log_path.read_text()}")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("uvicorn did not become ready within 120 s")
        yield process, base_url, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        log.close()


def test_serves_over_tcp_and_drains_in_flight_requests_on_sigterm(
    server: tuple[subprocess.Popen, str, Path],
) -> None:
    process, base_url, log_path = server
    files = {"file": ("x.png", image_bytes())}
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(httpx.post, f"{base_url}/classify", files=files, timeout=60)
        time.sleep(BATCH_WAIT_MS / 3000)  # the request is now waiting in the micro-batcher
        process.send_signal(signal.SIGTERM)
        response = in_flight.result()
    assert response.status_code == 200
    assert response.json()["predictions"][0]["filename"] == "x.png"
    # uvicorn re-raises the signal once its graceful shutdown is complete
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    log = log_path.read_text()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
