"""``python -m app`` with WORKERS=2: two real worker processes act as one service.

Which worker answered is the kernel's choice, so the tests look at each worker through
prometheus_client's per-process files (their names carry the pid), the ``pid`` label of
the model-version gauge, or the process holding the server end of a connection (/proc).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from benchmarks.servers import descendants, free_port
from tests.app.model_files import clone_version, copy_models
from tests.app.samples import image_bytes
from tests.raw_http import connect, head, read_response

READY_TIMEOUT_S = 240
WORKER_COUNT = 2
CLASSIFIER = "signs_classifier"
# Every admin answer: the change holds in both workers.
BOTH_CONFIRMED = {"confirmed": 2, "total": 2, "pending": [], "failed": [], "detail": None}


class Workers:
    def __init__(self, base_url: str, tmp_dir: Path, process: subprocess.Popen[bytes]) -> None:
        self.base_url = base_url
        self.tmp_dir = tmp_dir
        self.process = process

    def metrics_dir(self) -> Path:
        (runtime_dir,) = self.tmp_dir.glob("cellsign-*")
        return runtime_dir / "metrics"

    def versions_by_pid(self, model: str = CLASSIFIER) -> dict[str, float]:
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

    def each_worker(self, path: str = "/models") -> list[tuple[int, Any]]:
        """``GET path`` on fresh connections until every worker has answered at least once
        (the kernel spreads new connections over the workers' sockets); every answer as
        ``(pid of the worker that gave it, JSON)``."""
        processes = descendants(self.process.pid)
        answers: list[tuple[int, Any]] = []
        for _ in range(200):
            with connect(self.base_url, 30) as sock:
                sock.sendall(head("GET", path) + b"\r\n")
                response = read_response(sock, 30)
                assert response is not None and response.status == 200, response
                answers.append((serving_process(sock, processes), response.json()))
            if len({pid for pid, _ in answers}) == WORKER_COUNT:
                return answers
        raise AssertionError(f"fresh connections reached one worker only: {answers[0][0]}")


def serving_process(sock: socket.socket, processes: list[int]) -> int:
    """The process holding the server end of the open IPv4 connection ``sock``: its socket
    inode from /proc/net/tcp, then the process whose descriptors include it.

    The kernel may print a line twice when the table changes during the read, and a closed
    connection of the same ports lingers in TIME_WAIT with inode 0: hence a set without 0."""
    client_port, server_port = sock.getsockname()[1], sock.getpeername()[1]
    inodes = {
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if int(fields[1].rsplit(":", 1)[1], 16) == server_port
        and int(fields[2].rsplit(":", 1)[1], 16) == client_port
        and fields[9] != "0"
    }
    assert len(inodes) == 1, inodes
    target = f"socket:[{inodes.pop()}]"
    for pid in processes:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            for descriptor in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if os.readlink(descriptor) == target:
                        return pid
    raise AssertionError(f"no worker holds {target}")


@contextlib.contextmanager
def running_workers(quick_models: Path, tmp_dir: Path) -> Iterator[tuple[Workers, Path]]:
    model_dir = copy_models(quick_models, tmp_dir / "models")
    runtime_parent = tmp_dir / "tmp"
    runtime_parent.mkdir()
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "TMPDIR": str(runtime_parent),  # where python -m app creates its runtime folder
        "MODEL_DIR": str(model_dir),
        "GALLERY_DIR": str(tmp_dir / "gallery"),
        "DEVICE": "cpu",
        "RELOAD_INTERVAL_S": "0",
        "WORKERS": str(WORKER_COUNT),
        "PORT": str(port),
        "ACCESS_LOG": "false",
        "LOG_LEVEL": "warning",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # A request may stay in flight as long as a test holds its body back.
        "REQUEST_TIMEOUT_S": "120",
        "BODY_READ_TIMEOUT_S": "120",
    }
    log = (tmp_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Workers(f"http://127.0.0.1:{port}", runtime_parent, process)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len([v for v in _safe_versions(server).values() if v == 1]) < WORKER_COUNT:
            assert process.poll() is None, (tmp_dir / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "both workers did not load their models"
            time.sleep(0.5)
        # A worker answers once its start-up is over, when it has joined the others.
        server.each_worker("/healthz")
        yield server, model_dir
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
    assert not list(runtime_parent.iterdir()), "the runtime folder outlived the server"


@pytest.fixture
def workers(quick_models: Path, tmp_path: Path) -> Iterator[tuple[Workers, Path]]:
    with running_workers(quick_models, tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
def fleet(
    quick_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Workers, Path]]:
    """One server for the admin tests; each brings it to the state it starts from."""
    with running_workers(quick_models, tmp_path_factory.mktemp("fleet")) as running:
        yield running


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


def admin(server: Workers, method: str, path: str, body: Any = None) -> Any:
    """An admin call that must succeed and be in force in both workers when it answers."""
    answer = httpx.request(method, server.base_url + path, json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["workers"] | {"waited_s": 0} == BOTH_CONFIRMED | {"waited_s": 0}
    return answer.json()


def classifier_everywhere(server: Workers) -> list[dict[str, Any]]:
    """The classifier's versions and labels as each answer from each worker describes them."""
    return [answer["versions"][CLASSIFIER] for _, answer in server.each_worker()]


def two_versions_no_labels(server: Workers, model_dir: Path) -> tuple[int, int]:
    """Bring the classifier to: two versions loaded, no label; ``(newest, older)``."""
    (state, *_) = classifier_everywhere(server)
    for label in state["labels"]:
        admin(server, "DELETE", f"/admin/models/{CLASSIFIER}/labels/{label}")
    if len(state["loaded"]) < 2:
        clone_version(model_dir, CLASSIFIER, 1, max(state["loaded"]) + 1)
        admin(server, "POST", "/admin/reload")
    newest, older = classifier_everywhere(server)[0]["loaded"][:2]
    return newest, older


def test_a_reload_is_in_force_in_every_worker_when_it_answers(
    fleet: tuple[Workers, Path],
) -> None:
    server, model_dir = fleet
    newest, _ = two_versions_no_labels(server, model_dir)
    clone_version(model_dir, CLASSIFIER, 1, newest + 1)
    answer = admin(server, "POST", "/admin/reload")
    assert f"{CLASSIFIER} {newest} -> {newest + 1}" in answer["changes"]
    assert {state["default"] for state in classifier_everywhere(server)} == {newest + 1}


def test_a_stable_label_is_in_force_in_every_worker_when_it_answers(
    fleet: tuple[Workers, Path],
) -> None:
    server, model_dir = fleet
    _, older = two_versions_no_labels(server, model_dir)
    admin(server, "PUT", f"/admin/models/{CLASSIFIER}/labels/stable", {"version": older})
    states = classifier_everywhere(server)
    assert {(state["default"], state["labels"]["stable"]) for state in states} == {(older, older)}


def test_a_canary_share_is_in_force_in_every_worker_when_it_answers(
    fleet: tuple[Workers, Path],
) -> None:
    server, model_dir = fleet
    _, older = two_versions_no_labels(server, model_dir)
    path = f"/admin/models/{CLASSIFIER}/labels/canary"
    admin(server, "PUT", path, {"version": older, "canary_share": 0.25})
    states = classifier_everywhere(server)
    assert {(state["labels"]["canary"], state["canary_share"]) for state in states} == {
        (older, 0.25)
    }
    admin(server, "PUT", path, {"version": older, "canary_share": 1.0})
    assert {state["canary_share"] for state in classifier_everywhere(server)} == {1.0}


def test_a_removed_label_is_gone_from_every_worker_when_it_answers(
    fleet: tuple[Workers, Path],
) -> None:
    server, model_dir = fleet
    newest, older = two_versions_no_labels(server, model_dir)
    admin(server, "PUT", f"/admin/models/{CLASSIFIER}/labels/stable", {"version": older})
    admin(server, "DELETE", f"/admin/models/{CLASSIFIER}/labels/stable")
    states = classifier_everywhere(server)
    assert {(state["default"], tuple(state["labels"])) for state in states} == {(newest, ())}


def test_a_rollback_is_in_force_in_every_worker_when_it_answers(
    fleet: tuple[Workers, Path],
) -> None:
    server, model_dir = fleet
    newest, older = two_versions_no_labels(server, model_dir)
    answer = admin(server, "POST", f"/admin/rollback/{CLASSIFIER}")
    assert (answer["rolled_back_from"], answer["serving"]) == (newest, older)
    assert {state["default"] for state in classifier_everywhere(server)} == {older}


def test_stopping_refuses_new_connections_at_once_and_finishes_requests_in_flight(
    workers: tuple[Workers, Path],
) -> None:
    """SIGTERM to the supervising process while a request is in flight: a new connection
    is refused by the kernel (no worker listens any more) and never left waiting, while the
    request in flight completes."""
    server, _ = workers
    image = image_bytes("PNG")
    address = ("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))
    headers = {
        "Content-Type": "image/png",
        "Content-Length": str(len(image)),
        "Expect": "100-continue",
    }
    with connect(server.base_url, 120) as in_flight:
        in_flight.sendall(head("POST", "/classify", headers) + b"\r\n")
        go_on = read_response(in_flight, 60)  # the app has begun reading the body
        assert go_on is not None and go_on.status == 100
        in_flight.sendall(image[: len(image) // 2])
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "new connections were still accepted"
            try:
                probe = socket.create_connection(address, timeout=10)
            except ConnectionRefusedError:
                break
            with probe:
                try:
                    probe.sendall(head("GET", "/healthz", {"Connection": "close"}) + b"\r\n")
                    # Answered, or closed by a worker whose shutdown began meanwhile.
                    read_response(probe, 10)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                except TimeoutError:
                    pytest.fail("a connection made while the server stopped was left waiting")
            time.sleep(0.02)
        assert server.process.poll() is None  # still finishing the request in flight
        in_flight.sendall(image[len(image) // 2 :])
        response = read_response(in_flight, 120)
    assert response is not None and response.status == 200, response
    assert response.json()["predictions"][0]["label"]
    assert server.process.wait(timeout=60) == 0
