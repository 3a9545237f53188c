"""A real uvicorn process under abuse: clients that vanish mid-request, and SIGTERM under load.

Uses the ``uvicorn_server`` fixture of ``conftest.py`` (uvicorn on 127.0.0.1 with the quick
models and a 3 s micro-batch wait, so requests can be caught while they wait in a batch).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from benchmarks.payloads import multipart_body
from benchmarks.servers import UvicornServer
from tests.app.helpers import BATCH_WAIT_MS, AppClientFactory, logged_errors, started
from tests.app.samples import image_bytes

ENDPOINTS = ("/classify", "/denoise", "/similar")


def multipart_request(path: str, host: str, data: bytes) -> tuple[bytes, bytes]:
    """``(request head, body)`` of one ``file`` upload, apart so a client can send part of it."""
    body, content_type = multipart_body([data])
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head, body


def abandon(
    base_url: str, path: str, data: bytes, *, send_fraction: float, linger_s: float
) -> None:
    """Send the head and part (or all) of an upload, wait, then drop the connection unread."""
    address = httpx.URL(base_url)
    head, body = multipart_request(path, f"{address.host}:{address.port}", data)
    with socket.create_connection((address.host, address.port), timeout=10) as connection:
        connection.sendall(head + body[: int(len(body) * send_fraction)])
        time.sleep(linger_s)


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def post(base_url: str, path: str, data: bytes) -> httpx.Response:
    files = {"file": ("x.png", data)}
    return httpx.post(f"{base_url}{path}", files=files, timeout=120)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_clients_that_vanish_mid_upload_or_mid_batch_leak_nothing_and_fail_no_one(
    uvicorn_server: UvicornServer,
) -> None:
    process, base_url, log_path = started(uvicorn_server)
    image = image_bytes()
    # Warm up every endpoint (thread pools, TensorFlow kernels) before counting descriptors.
    assert all(post(base_url, path, image).status_code == 200 for path in ENDPOINTS)
    descriptors_before = open_descriptors(process.pid)
    large_upload = image + b"\0" * 3_000_000  # past the 1 MB spill-to-disk threshold
    with ThreadPoolExecutor(max_workers=12) as pool:
        bystanders = [pool.submit(post, base_url, path, image) for path in ENDPOINTS * 2]
        vanished = [
            *(
                pool.submit(
                    abandon, base_url, "/classify", large_upload, send_fraction=0.5, linger_s=0.5
                )
                for _ in range(3)
            ),
            *(
                # The whole request arrives, then the client leaves while it waits in a batch.
                pool.submit(abandon, base_url, path, image, send_fraction=1.0, linger_s=0.5)
                for path in ENDPOINTS
            ),
        ]
        for future in vanished:
            future.result()
        responses = [future.result() for future in bystanders]
    assert [response.status_code for response in responses] == [200] * len(responses)
    # Abandoned requests finish their batch in the background; give them time to be released.
    deadline = time.monotonic() + 60
    while open_descriptors(process.pid) > descriptors_before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert open_descriptors(process.pid) <= descriptors_before
    assert post(base_url, "/classify", image).status_code == 200
    assert logged_errors(log_path) == []


def test_sigterm_lets_every_in_flight_request_on_every_endpoint_finish(
    uvicorn_server: UvicornServer,
) -> None:
    process, base_url, log_path = started(uvicorn_server)
    image = image_bytes()
    with ThreadPoolExecutor(max_workers=9) as pool:
        in_flight = [pool.submit(post, base_url, path, image) for path in ENDPOINTS * 3]
        time.sleep(BATCH_WAIT_MS / 3000)  # all nine are now waiting in their batchers
        process.send_signal(signal.SIGTERM)
        responses = [future.result() for future in in_flight]
    assert [response.status_code for response in responses] == [200] * len(responses)
    assert {response.headers["content-type"] for response in responses} == {
        "application/json",
        "image/png",
    }
    # uvicorn exits 0 after a graceful shutdown, or re-raises the signal once it is complete
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert logged_errors(log_path) == []


@pytest.mark.anyio
async def test_the_app_hands_pillows_pixel_limit_back_when_it_stops(
    make_client: AppClientFactory, quick_models: Path
) -> None:
    """The app tightens Pillow's process-wide bomb guard while it runs; an embedding program
    (or the next test) gets its own limit back afterwards."""
    before = Image.MAX_IMAGE_PIXELS
    async with make_client(quick_models, max_image_pixels=1234):
        assert Image.MAX_IMAGE_PIXELS == 1234
    assert before == Image.MAX_IMAGE_PIXELS
