"""The living gallery's promises against a real ``python -m app`` with two workers sharing one
embedded store: additions that survive kill -9 whole, read-your-writes across workers, and a
re-encoding after a new autoencoder version that /similar switches to at once.

The offline index is cut to ``CELLS`` cells, so that encoding the whole gallery again takes
seconds (the quick models' encoder averages eight views of each cell).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.gallery.sqlite_store import SqliteGalleryStore
from benchmarks.servers import descendants, free_port
from tests.app.gallery.small_index import shrink_index
from tests.app.model_files import clone_version, copy_models
from tests.app.test_workers import serving_process
from tests.raw_http import connect, head, read_response

READY_TIMEOUT_S = 240
CELLS = 120
WORKERS = 2
SEEN_WITHIN_S = 1.0  # the promise: every worker finds an addition within a second


class Server:
    """``python -m app`` in a process group of its own (kill -9 reaches every process)."""

    def __init__(self, model_dir: Path, gallery_dir: Path, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        runtime_parent = tmp / f"run-{self.port}"
        runtime_parent.mkdir()
        self.log_path = tmp / f"server-{self.port}.log"
        self.env = {
            "PATH": "/usr/bin:/bin",
            "TMPDIR": str(runtime_parent),
            "MODEL_DIR": str(model_dir),
            "GALLERY_DIR": str(gallery_dir),
            "DEVICE": "cpu",
            "RELOAD_INTERVAL_S": "0",
            "WORKERS": str(WORKERS),
            "PORT": str(self.port),
            "ACCESS_LOG": "false",
            "LOG_LEVEL": "warning",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "REQUEST_TIMEOUT_S": "60",
            **env,
        }
        self.worker_count = int(self.env["WORKERS"])
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=Path(__file__).resolve().parents[2],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_until_every_worker_is_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL to the supervisor and every worker at once."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def workers(self) -> list[int]:
        """The processes that may serve: the workers, or with one worker the server itself."""
        assert self.process is not None
        return [self.process.pid, *descendants(self.process.pid)]

    def ask(self, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, Any]:
        """One request on a fresh connection (the kernel picks the worker): ``(pid of the
        worker that answered, response)``."""
        with connect(self.base_url, 60) as sock:
            length = {"Content-Length": str(len(body))} if body or method == "POST" else {}
            sock.sendall(head(method, path, {**headers, **length}) + b"\r\n" + body)
            response = read_response(sock, 60)
            assert response is not None, self.log()
            return serving_process(sock, self.workers()), response

    def wait_until_every_worker_is_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready: set[int] = set()
        while len(ready) < self.worker_count:
            assert self.process is not None and self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, f"not ready:\n{self.log()}"
            try:
                pid, response = self.ask("GET", "/readyz")
            except (OSError, AssertionError):
                time.sleep(0.25)
                continue
            if response.status == 200:
                ready.add(pid)
            else:
                time.sleep(0.1)


@pytest.fixture(scope="module")
def model_dir(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = copy_models(quick_models, tmp_path_factory.mktemp("gallery-models") / "models")
    shrink_index(folder, CELLS)
    return folder


def cell_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (36, 40, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = {"Content-Type": "image/png"}
ANSWERED_BEFORE_KILL = 24  # additions answered 201 before every server process is killed


def post_cells(base_url: str, label: str, cells: list[bytes]) -> httpx.Response:
    files = [("file", (f"c{n}.png", cell, "image/png")) for n, cell in enumerate(cells)]
    return httpx.post(f"{base_url}/gallery", files=files, data={"label": label}, timeout=60)


@dataclass
class Killed:
    """A gallery whose server was killed -9 during concurrent additions, served again."""

    server: Server
    gallery_dir: Path
    answered: dict[int, str]  # id -> label of every cell whose addition was answered 201


def kill_during_additions(server: Server, writers: int = 4) -> dict[int, str]:
    """Add cells from ``writers`` threads (one to three per request) and kill -9 every
    server process once ``ANSWERED_BEFORE_KILL`` were answered, the writers still writing;
    returns what was answered 201."""
    answered: dict[int, str] = {}
    stop = threading.Event()
    failures: list[str] = []

    def write(writer: int) -> None:
        batch = 0
        while not stop.is_set():
            batch += 1
            label = f"writer{writer}"
            cells = [cell_png(writer * 100_000 + batch * 10 + n) for n in range(1 + batch % 3)]
            try:
                response = post_cells(server.base_url, label, cells)
            except httpx.TransportError:
                continue  # the server is gone: this addition may or may not have landed
            if response.status_code == 201:
                answered.update((item["id"], label) for item in response.json()["items"])
            elif not stop.is_set():
                failures.append(f"{response.status_code}: {response.text}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while len(answered) < ANSWERED_BEFORE_KILL and time.monotonic() < deadline and not failures:
        time.sleep(0.02)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    return dict(answered)


@pytest.fixture(scope="module")
def killed(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Killed]:
    """Two-worker servers on one gallery: the first killed -9 while four clients add cells,
    the second started on what it left. The other tests use the second one (the
    re-encoding test adds an autoencoder version to ``model_dir``, so it runs last)."""
    tmp = tmp_path_factory.mktemp("gallery-server")
    gallery_dir = tmp / "gallery"
    with Server(model_dir, gallery_dir, tmp) as first:
        answered = kill_during_additions(first)
    # Re-encoding takes half the time while searches come in: /readyz can show it under way.
    with Server(model_dir, gallery_dir, tmp, GALLERY_REENCODE_SHARE="0.5") as second:
        yield Killed(second, gallery_dir, answered)


@pytest.fixture
def server(killed: Killed) -> Server:
    return killed.server


def test_every_answered_addition_survives_kill_minus_9_whole(killed: Killed) -> None:
    assert len(killed.answered) >= ANSWERED_BEFORE_KILL
    for item_id, label in killed.answered.items():
        response = httpx.get(f"{killed.server.base_url}/gallery/{item_id}", timeout=60)
        assert response.status_code == 200, (item_id, response.text)
        assert response.json()["label"] == label
    # Whole items only: every item has its image and its code, every code its item.
    store = SqliteGalleryStore(killed.gallery_dir)
    try:
        space = store.active_space()
        assert space is not None
        items = store.items(None, 1_000_000, None)
        assert {item.id for item in items} >= set(killed.answered)
        assert all(store.image(item.id) is not None for item in items)
        assert store.missing_codes(space, 1_000_000) == []
        assert store.code_count(space) == store.count() == len(items)
        assert len(items) >= CELLS + len(killed.answered)
    finally:
        store.close()


def test_an_addition_is_read_at_once_by_its_worker_and_within_a_second_by_the_other(
    server: Server,
) -> None:
    label = "read-your-writes"
    cell = cell_png(1)
    search = f"/similar?k=3&label={label}"
    upload = {**PNG, "Content-Length": str(len(cell))}
    with connect(server.base_url, 60) as sock:
        sock.sendall(head("POST", f"/gallery?label={label}", upload) + b"\r\n" + cell)
        added = read_response(sock, 60)
        answered = time.monotonic()
        assert added is not None and added.status == 201, added
        writer = serving_process(sock, server.workers())
        (item,) = added.json()["items"]
        # The same worker (the same connection), at once.
        sock.sendall(head("POST", search, upload) + b"\r\n" + cell)
        found = read_response(sock, 60)
        assert found is not None and [r["id"] for r in found.json()["results"]] == [item["id"]]
    # The other worker's search index catches up by itself, within a second of the answer.
    while True:
        pid, found = server.ask("POST", search, cell, **PNG)
        if pid == writer:
            continue
        elapsed = time.monotonic() - answered
        assert found.status == 200, found.body
        if found.json()["results"]:
            break
        assert elapsed < SEEN_WITHIN_S, f"worker {pid} had not seen it after {elapsed:.2f} s"
    assert [r["id"] for r in found.json()["results"]] == [item["id"]]
    pid, read = server.ask("GET", f"/gallery/{item['id']}")
    assert read.status == 200 and read.json()["label"] == label


def test_a_new_autoencoder_version_is_encoded_in_the_background_then_searched_at_once(
    server: Server, model_dir: Path
) -> None:
    query = cell_png(7)
    answers: list[tuple[int, str]] = []  # (status, X-Index-Version) of each /similar
    stop = threading.Event()

    def search() -> None:
        """Fresh connections, so that both workers serve searches (and so pace the
        re-encoding, which leaves /readyz time to show its progress)."""
        while not stop.is_set():
            try:
                response = httpx.post(
                    f"{server.base_url}/similar?k=5", content=query, headers=PNG, timeout=60
                )
            except httpx.TransportError as error:
                answers.append((0, repr(error)))
                continue
            answers.append((response.status_code, response.headers.get("X-Index-Version", "")))

    searcher = threading.Thread(target=search)
    searcher.start()
    try:
        clone_version(model_dir, "malaria_autoencoder", 1, 2)
        reload = httpx.post(f"{server.base_url}/admin/reload", timeout=120)
        assert reload.status_code == 200 and reload.json()["workers"]["confirmed"] == WORKERS
        progress: list[dict[str, Any]] = []
        switched: set[int] = set()
        deadline = time.monotonic() + 180
        while len(switched) < WORKERS:
            assert time.monotonic() < deadline, (progress[-3:], server.log())
            pid, ready = server.ask("GET", "/readyz")
            assert ready.status == 200, ready.body  # ready all along: the old codes serve
            gallery = ready.json()["gallery"]
            if gallery["reencoding"] is not None:
                progress.append(gallery["reencoding"])
            if gallery["encoder_version"] == 2:
                switched.add(pid)
            time.sleep(0.05)
        after_switch = len(answers) + 1  # one may have been searched just before the switch
        while len(answers) < after_switch + 4:
            assert time.monotonic() < deadline, answers[-3:]
            time.sleep(0.05)
    finally:
        stop.set()
        searcher.join()
    assert progress, "no /readyz answer showed the re-encoding under way"
    assert all(p["encoder_version"] == 2 and 0 <= p["done"] <= p["total"] for p in progress)
    assert progress[0]["done"] < progress[0]["total"]
    assert progress[0]["total"] >= CELLS
    assert {status for status, _ in answers} == {200}
    versions = [version for _, version in answers]
    assert set(versions) == {"1", "2"}, versions
    assert set(versions[after_switch:]) == {"2"}
