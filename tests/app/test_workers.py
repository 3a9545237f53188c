"""``python -m app`` with WORKERS=2: two real worker processes act as one service.

Which worker answered is the kernel's choice, so the tests look at each worker through
prometheus_client's per-process files (their names carry the pid) and the ``pid`` label of
the model-version gauge.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from benchmarks.servers import free_port
from tests.app.model_files import clone_version, copy_models
from tests.app.samples import image_bytes

READY_TIMEOUT_S = 240


class Workers:
    def __init__(self, base_url: str, tmp_dir: Path) -> None:
        self.base_url = base_url
        self.tmp_dir = tmp_dir

    def metrics_dir(self) -> Path:
        (runtime_dir,) = self.tmp_dir.glob("cellsign-*")
        return runtime_dir / "metrics"

    def versions_by_pid(self, model: str = "signs_classifier") -> dict[str, float]:
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        pattern = rf'cellsign_model_version{{model="{model}",pid="(\d+)"}} ([\d.]+)'
        return {pid: float(value) for pid, value in re.findall(pattern, text)}

    def classify_requests_by_pid(self, work: Path) -> dict[str, float]:
        """Each worker's own count, read from its file alone."""
        counts = {}
        for path in self.metrics_dir().glob("counter_*.db"):
            alone = work / path.stem
            alone.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, alone / path.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(alone))
            value = registry.get_sample_value(
                "cellsign_requests_total",
                {"endpoint": "/classify", "method": "POST", "status": "200"},
            )
            counts[path.stem.removeprefix("counter_")] = value or 0.0
        return counts


@pytest.fixture
def workers(quick_models: Path, tmp_path: Path) -> Iterator[tuple[Workers, Path]]:
    model_dir = copy_models(quick_models, tmp_path / "models")
    runtime_parent = tmp_path / "tmp"
    runtime_parent.mkdir()
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "TMPDIR": str(runtime_parent),  # where python -m app creates its runtime folder
        "MODEL_DIR": str(model_dir),
        "DEVICE": "cpu",
        "RELOAD_INTERVAL_S": "0",
        "WORKERS": "2",
        "PORT": str(port),
        "ACCESS_LOG": "false",
        "LOG_LEVEL": "warning",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Workers(f"http://127.0.0.1:{port}", runtime_parent)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len([v for v in _safe_versions(server).values() if v == 1]) < 2:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "both workers did not load their models"
            time.sleep(0.5)
        yield server, model_dir
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
    assert not list(runtime_parent.iterdir()), "the runtime folder outlived the server"


def _safe_versions(server: Workers) -> dict[str, float]:
    try:
        return server.versions_by_pid()
    except httpx.TransportError:
        return {}


def classify_concurrently(base_url: str, count: int) -> None:
    image = image_bytes("PNG")

    def one(_: int) -> int:
        # A new connection each time, so the kernel may hand it to either worker.
        response = httpx.post(
            base_url + "/classify",
            content=image,
            headers={"Content-Type": "image/png"},
            timeout=60,
        )
        return response.status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(count))) == {200}


def classify_until_both_answer(server: Workers, work: Path) -> tuple[int, dict[str, float]]:
    """Requests until each worker has answered one (a worker that has loaded its models
    may not listen yet); returns how many were sent and each worker's count."""
    sent = 0
    per_worker: dict[str, float] = {}
    while len([n for n in per_worker.values() if n > 0]) < 2 and sent < 400:
        classify_concurrently(server.base_url, 16)
        sent += 16
        per_worker = server.classify_requests_by_pid(work)
    assert len([n for n in per_worker.values() if n > 0]) == 2, per_worker
    return sent, per_worker


def test_metrics_sum_the_counters_of_both_workers(
    workers: tuple[Workers, Path], tmp_path: Path
) -> None:
    server, _ = workers
    sent, per_worker = classify_until_both_answer(server, tmp_path / "alone")
    assert sum(per_worker.values()) == sent
    response = httpx.get(server.base_url + "/metrics", timeout=10).text
    line = 'cellsign_requests_total{endpoint="/classify",method="POST",status="200"}'
    assert f"{line} {float(sent)}" in response


def test_connections_opened_at_once_are_spread_over_the_workers(
    workers: tuple[Workers, Path], tmp_path: Path
) -> None:
    """What a load balancer or wrk does: open many connections, then use them. Each worker
    has its own SO_REUSEPORT socket, so neither can take them all."""
    server, _ = workers
    port = int(server.base_url.rsplit(":", 1)[1])
    _, before = classify_until_both_answer(server, tmp_path / "before")
    image = image_bytes("PNG")
    request = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(image)}\r\nConnection: close\r\n\r\n"
    ).encode() + image
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(32)]
    try:
        for sock in sockets:
            sock.sendall(request)
        for sock in sockets:
            assert sock.recv(12).startswith(b"HTTP/1.1 200")
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(0.5)  # the counters are written after the answer
    after = server.classify_requests_by_pid(tmp_path / "after")
    served = [after[pid] - before.get(pid, 0.0) for pid in after]
    assert sum(served) == 32 and min(served) >= 6, served


def test_one_reload_call_reaches_every_worker(workers: tuple[Workers, Path]) -> None:
    server, model_dir = workers
    clone_version(model_dir, "signs_classifier", 1, 2)
    answer = httpx.post(server.base_url + "/admin/reload", timeout=120)
    assert answer.status_code == 200
    assert "signs_classifier 1 -> 2" in answer.json()["changes"]
    deadline = time.monotonic() + 60
    while set(server.versions_by_pid().values()) != {2.0}:
        assert time.monotonic() < deadline, server.versions_by_pid()
        time.sleep(0.5)
    assert len(server.versions_by_pid()) == 2
    for _ in range(20):  # new connections: whichever worker answers serves version 2
        ready = httpx.get(server.base_url + "/readyz", headers={"Connection": "close"})
        assert ready.json()["models"]["signs_classifier"] == 2
