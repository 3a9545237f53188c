"""Hostile uploads and hostile model folders against a real ``uvicorn`` process.

Each refusal must be cheap in the server's own CPU and memory (read from /proc), and the
process must stay up and keep serving what it served before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.hostile_inputs import flat_png, progressive_jpeg
from benchmarks.servers import UvicornServer, cpu_seconds, rss_mib
from tests.app.model_files import (
    claim_huge_flat_index,
    clone_version,
    copy_models,
    edit_metadata,
    file_io_classifier,
    zip_bomb_gallery,
)
from tests.app.samples import image_bytes

PNG = {"file": ("x.png", image_bytes())}


@pytest.fixture
def served(quick_models: Path, tmp_path: Path) -> Iterator[tuple[UvicornServer, Path]]:
    """A real server on a private copy of the models that a test may change on disk."""
    model_dir = copy_models(quick_models, tmp_path / "models")
    env = {"MODEL_DIR": str(model_dir), "DEVICE": "cpu", "RELOAD_INTERVAL_S": "0"}
    with UvicornServer("app.main:app", env, tmp_path / "uvicorn.log", "/readyz") as server:
        yield server, model_dir


def test_a_jpeg_with_thousands_of_scans_is_refused_cheaply(
    served: tuple[UvicornServer, Path],
) -> None:
    """2,000 scans over 1984x1984 (90 KB) cost about 7 s of CPU to decode; refused, 413."""
    server, _ = served
    hostile = progressive_jpeg(1984, 2000)
    before = cpu_seconds(server.pid)
    response = httpx.post(
        f"{server.base_url}/classify", files={"file": ("scans.jpg", hostile)}, timeout=60
    )
    spent = cpu_seconds(server.pid) - before
    assert response.status_code == 413, response.text
    assert "more than 32 scans" in response.json()["detail"]
    assert spent < 0.5
    at_limit = {"file": ("ok.jpg", progressive_jpeg(1000, 32))}
    assert httpx.post(f"{server.base_url}/classify", files=at_limit, timeout=60).status_code == 200


def test_pixel_limits_refuse_full_size_decodes_and_oversized_requests(
    served: tuple[UvicornServer, Path],
) -> None:
    server, _ = served
    url = f"{server.base_url}/classify"
    wide = {"file": ("wide.png", flat_png(2100, 2000))}  # 4.2 MP, 10 KB
    response = httpx.post(url, files=wide, timeout=60)
    assert response.status_code == 413, response.text
    assert "a PNG is decoded at full size" in response.json()["detail"]
    many = [("file", (f"{n}.png", flat_png(2000, 2000))) for n in range(5)]  # 20 MP together
    response = httpx.post(url, files=many, timeout=60)
    assert response.status_code == 413, response.text
    assert "pixel limit of one request" in response.json()["detail"]
    assert httpx.post(url, files=many[:1], timeout=60).status_code == 200


def test_gallery_file_truncated_on_disk_gets_a_clean_503_and_the_server_lives(
    served: tuple[UvicornServer, Path],
) -> None:
    """Memory-mapped, this killed the process with SIGBUS; read with pread, it cannot."""
    server, model_dir = served
    folder = model_dir / "malaria_index" / "1"
    with np.load(folder / "gallery.npz") as gallery:
        first, last = int(gallery["ids"][0]), int(gallery["ids"][-1])
    assert httpx.get(f"{server.base_url}/gallery/{last}.png").status_code == 200
    images = folder / "gallery_images.bin"
    os.truncate(images, images.stat().st_size // 2)  # in place, as rsync --inplace would

    response = httpx.get(f"{server.base_url}/gallery/{last}.png", timeout=30)
    assert response.status_code == 503
    assert "changed on disk" in response.json()["detail"]
    assert str(model_dir) not in response.text
    assert server.process is not None and server.process.poll() is None
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200
    assert httpx.get(f"{server.base_url}/gallery/{first}.png").status_code == 200


def test_hostile_version_folders_are_refused_quickly_and_the_old_ones_keep_serving(
    served: tuple[UvicornServer, Path], tmp_path: Path
) -> None:
    server, model_dir = served
    huge_input = clone_version(model_dir, "signs_classifier", 1, 2)
    edit_metadata(huge_input, input={"height": 8000, "width": 8000, "channels": 3})
    written = tmp_path / "written-by-the-model.txt"
    file_io_classifier(model_dir, 3, written)
    claim_huge_flat_index(clone_version(model_dir, "malaria_index", 1, 2), 200_000_000)
    zip_bomb_gallery(clone_version(model_dir, "malaria_index", 1, 3), "labels.npy", 300)

    rss_before = rss_mib(server.pid)
    started = time.monotonic()
    reloaded = httpx.post(f"{server.base_url}/admin/reload", timeout=300)
    elapsed = time.monotonic() - started
    assert reloaded.status_code == 200
    assert reloaded.json()["changes"] == []
    assert elapsed < 30
    assert rss_mib(server.pid) - rss_before < 250
    assert not written.exists()  # the file-writing signature never ran

    models = httpx.get(f"{server.base_url}/models").json()
    reasons = {
        (name, entry["version"]): entry["reason"]
        for name, entries in models["refused"].items()
        for entry in entries
    }
    huge_input_reason = reasons["signs_classifier", 2]
    assert "input.height: Input should be less than or equal to 1024" in huge_input_reason
    assert "WriteFile" in reasons["signs_classifier", 3]
    assert "header claims" in reasons["malaria_index", 2]
    assert "labels.npy unpacks to" in reasons["malaria_index", 3]
    assert str(model_dir) not in str(models)
    assert str(model_dir) not in httpx.get(f"{server.base_url}/readyz").text

    classified = httpx.post(f"{server.base_url}/classify", files=PNG, timeout=60)
    assert classified.json()["model"]["version"] == 1
    similar = httpx.post(f"{server.base_url}/similar", files=PNG, timeout=60)
    assert similar.json()["index"]["version"] == 1
