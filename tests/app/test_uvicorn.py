"""A real uvicorn process: it serves over TCP and drains in-flight requests on SIGTERM."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.app.conftest import BATCH_WAIT_MS, logged_errors, started
from tests.app.samples import image_bytes
from tests.perf.servers import UvicornServer


def test_serves_over_tcp_and_drains_in_flight_requests_on_sigterm(
    uvicorn_server: UvicornServer,
) -> None:
    process, base_url, log_path = started(uvicorn_server)
    files = {"file": ("x.png", image_bytes())}
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(httpx.post, f"{base_url}/classify", files=files, timeout=60)
        time.sleep(BATCH_WAIT_MS / 3000)  # the request is now waiting in the micro-batcher
        process.send_signal(signal.SIGTERM)
        response = in_flight.result()
    assert response.status_code == 200
    assert response.json()["predictions"][0]["filename"] == "x.png"
    # uvicorn exits 0 after a graceful shutdown, or re-raises the signal once it is complete
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert logged_errors(log_path) == []
