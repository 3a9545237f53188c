"""Hostile uploads and hostile model folders against a real ``uvicorn`` process, and hostile
numbers and Host headers against ``python -m app``.

Each refusal must be cheap in the server's own CPU and memory (read from /proc), and the
process must stay up and keep serving what it served before.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.hostile_inputs import flat_png, progressive_jpeg
from benchmarks.servers import AppServer, UvicornServer, cpu_seconds, rss_mib
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
    env = {
        "MODEL_DIR": str(model_dir),
        "GALLERY_DIR": str(tmp_path / "gallery"),
        "DEVICE": "cpu",
        "RELOAD_INTERVAL_S": "0",
    }
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
    many = [("file", (f"{n}.png", flat_png(2000, 2000))) for n in range(2)]  # 2 x 4 MP at full size
    response = httpx.post(url, files=many, timeout=60)
    assert response.status_code == 413, response.text
    assert "pixel limit of one request" in response.json()["detail"]
    assert httpx.post(url, files=many[:1], timeout=60).status_code == 200


def test_an_offline_index_file_truncated_on_disk_changes_no_gallery_answer(
    served: tuple[UvicornServer, Path],
) -> None:
    """The gallery keeps its own copy of every cell (its store): the offline index's
    ``gallery_images.bin``, truncated in place as rsync --inplace would, is not read again
    (and were it read, it is read with pread, never mapped: a mapped file truncated in place
    killed the process with SIGBUS)."""
    server, model_dir = served
    items = httpx.get(f"{server.base_url}/gallery", params={"limit": 1000}).json()["items"]
    first, last = items[0]["image_url"], items[-1]["image_url"]
    before = httpx.get(f"{server.base_url}{last}").content
    images = model_dir / "malaria_index" / "1" / "gallery_images.bin"
    os.truncate(images, images.stat().st_size // 2)

    response = httpx.get(f"{server.base_url}{last}", timeout=30)
    assert response.status_code == 200 and response.content == before
    assert httpx.get(f"{server.base_url}{first}").status_code == 200
    assert httpx.post(f"{server.base_url}/similar", files=PNG, timeout=60).status_code == 200
    assert server.process is not None and server.process.poll() is None


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


@pytest.fixture(scope="module")
def production(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """``python -m app`` (its own HTTP protocol and limits) on the shared models, read only."""
    folder = tmp_path_factory.mktemp("numbers")
    env = {
        "MODEL_DIR": str(quick_models),
        "GALLERY_DIR": str(folder / "gallery"),
        "DEVICE": "cpu",
        "RELOAD_INTERVAL_S": "0",
    }
    with AppServer(env, folder / "app.log") as server:
        yield server


def exchange(server: UvicornServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` exactly as written (httpx would refuse or rewrite some of these
    headers); the answer's status, headers and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def raw_post(path: bytes, *headers: bytes, length: bytes | None = None) -> bytes:
    body = image_bytes()
    declared = str(len(body)).encode() if length is None else length
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: cellsign", b"Content-Type: image/png"]
    lines += [b"Content-Length: " + declared, *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def raw_get(target: bytes, host: bytes = b"cellsign") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"


WHOLE_NUMBER = "in at most 18 ASCII digits"
TIMEOUT_LIMIT = "at most 32 ASCII characters"
THOUSANDS_OF_DIGITS = b"1" * 5_000  # past int()'s own limit of 4,300 digits


@pytest.mark.parametrize(
    ("request_bytes", "status", "fragment"),
    [
        (raw_get(b"/gallery/" + THOUSANDS_OF_DIGITS + b".png"), 422, WHOLE_NUMBER),
        (raw_get(b"/gallery/%D9%A3.png"), 422, WHOLE_NUMBER),  # an Arabic-Indic 3
        (raw_get(b"/gallery/1.png?version=" + THOUSANDS_OF_DIGITS), 422, WHOLE_NUMBER),
        (raw_post(b"/similar?version=%C2%B2"), 422, WHOLE_NUMBER),  # a superscript 2
        (raw_post(b"/similar?version=" + THOUSANDS_OF_DIGITS), 422, WHOLE_NUMBER),
        (raw_post(b"/similar?k=" + THOUSANDS_OF_DIGITS), 422, "whole number between 1 and"),
        (raw_post(b"/similar", b"X-Request-Timeout: " + b"9" * 10_000), 422, TIMEOUT_LIMIT),
        (raw_post(b"/similar", "X-Request-Timeout: ٣".encode()), 422, TIMEOUT_LIMIT),
        (raw_post(b"/similar", b"X-Request-Timeout: 1e999"), 422, TIMEOUT_LIMIT),
        (raw_post(b"/similar", b"X-Request-Timeout: nan"), 422, TIMEOUT_LIMIT),
        (raw_post(b"/denoise", length=b"1" * 19), 400, "Content-Length must be"),
        (raw_post(b"/denoise", length=b"9" * 18), 413, "byte limit"),
    ],
    ids=[
        "gallery-id-digits",
        "gallery-id-arabic",
        "gallery-version-digits",
        "version-superscript",
        "version-digits",
        "k-digits",
        "timeout-10k-chars",
        "timeout-arabic",
        "timeout-inf",
        "timeout-nan",
        "content-length-19-digits",
        "content-length-18-digits",
    ],
)
def test_numbers_in_the_request_line_and_headers_get_a_4xx_naming_the_limit(
    production: AppServer, request_bytes: bytes, status: int, fragment: str
) -> None:
    answered, headers, body = exchange(production, request_bytes)
    assert answered == status, body[:300]
    assert headers["content-type"] == "application/json"
    assert fragment in str(json.loads(body)["detail"])
    assert "Traceback" not in production.log_path.read_text()
    assert httpx.get(f"{production.base_url}/readyz").status_code == 200


@pytest.mark.parametrize("declared", ["٣".encode(), b"\xb2", THOUSANDS_OF_DIGITS])
def test_a_content_length_that_is_not_ascii_digits_is_refused_by_the_protocol(
    production: AppServer, declared: bytes
) -> None:
    """httptools refuses these before the app sees them (the app refuses the rest: above),
    with a JSON detail like every other refusal."""
    answered, headers, body = exchange(production, raw_post(b"/denoise", length=declared))
    assert answered == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["detail"].startswith("malformed HTTP request")
    assert "Traceback" not in production.log_path.read_text()


@pytest.mark.parametrize("target", [b"/models/", b"/healthz/", b"/static"])
def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_the_client_sent(
    production: AppServer, target: bytes
) -> None:
    answered, headers, body = exchange(production, raw_get(target, host=b"evil.example"))
    assert answered == 404, body[:300]
    assert "location" not in headers
    assert json.loads(body)["detail"] == "Not Found"
    answered, _, body = exchange(production, raw_get(b"/models", host=b"evil.example"))
    assert answered == 200
    assert b"evil.example" not in body
