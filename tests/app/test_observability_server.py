"""Request IDs, the JSON access log and OTLP export, as a real uvicorn process does them.

uvicorn runs with its own access log on and at info level, as ``uvicorn app.main:app`` does by
default: the app's access line must then be the only one per request.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from benchmarks.servers import UvicornServer
from tests.app.otlp_collector import OtlpCollector
from tests.app.samples import image_bytes
from tests.app.spans import INCOMING_SPAN_ID, INCOMING_TRACE_ID, TRACEPARENT

pytestmark = pytest.mark.slow

T = TypeVar("T")


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    quick_models: Path, tmp_path_factory: pytest.TempPathFactory, collector: OtlpCollector
) -> Iterator[UvicornServer]:
    env = {
        "MODEL_DIR": str(quick_models),
        "DEVICE": "cpu",
        "RELOAD_INTERVAL_S": "0",
        "LOG_FORMAT": "json",
        "ACCESS_LOG": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_SERVICE_NAME": "cellsign-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s instead of every 5 s
    }
    log_path = tmp_path_factory.mktemp("observability") / "uvicorn.log"
    args = ("--log-level", "info")
    with UvicornServer("app.main:app", env, log_path, "/readyz", uvicorn_args=args) as running:
        yield running


def eventually(find: Callable[[], T | None], timeout_s: float = 15.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not found within {timeout_s} s")


def json_lines(log_path: Path) -> list[dict[str, Any]]:
    records = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def access_lines(server: UvicornServer, request_id: str) -> list[dict[str, Any]]:
    return [
        record
        for record in json_lines(server.log_path)
        if record["logger"] == "app.access" and record.get("request_id") == request_id
    ]


def test_one_json_access_line_per_request_with_id_stages_and_trace(server: UvicornServer) -> None:
    response = httpx.post(
        server.base_url + "/classify",
        files={"file": ("hand.png", image_bytes("PNG"))},
        headers={"X-Request-ID": "real-1", "traceparent": TRACEPARENT},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "real-1"
    (line,) = eventually(lambda: access_lines(server, "real-1"))
    assert line["message"] == "request"
    assert (line["method"], line["endpoint"], line["status"]) == ("POST", "/classify", 200)
    assert line["trace_id"] == INCOMING_TRACE_ID
    assert line["client"] == "127.0.0.1"
    for stage in ("decode_ms", "queue_ms", "model_ms"):
        assert 0 <= line[stage] <= line["duration_ms"]
    log = server.log_path.read_text(errors="replace")
    assert '"POST /classify HTTP/1.1" 200' not in log  # uvicorn's own access line is off
    assert any(
        record["logger"] == "uvicorn.error" and "startup complete" in record["message"]
        for record in json_lines(server.log_path)
    )  # uvicorn's messages after start-up are JSON too


def test_a_refused_body_over_real_http_carries_a_fresh_id(server: UvicornServer) -> None:
    """A 1 TB Content-Length is refused from the head alone (httpx would not send it, so the
    request is written by hand); the bad X-Request-ID is replaced in header, body and log."""
    head = (
        "POST /classify HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000000000\r\n"
        "X-Request-ID: bad id!\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
        connection.sendall(head.encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert status_line.split()[1] == "413"
    request_id = headers["x-request-id"]
    assert len(request_id) == 32 and json.loads(body)["request_id"] == request_id
    (line,) = eventually(lambda: access_lines(server, request_id))
    assert line["status"] == 413


def test_spans_reach_the_otlp_collector_in_the_callers_trace(
    server: UvicornServer, collector: OtlpCollector
) -> None:
    response = httpx.post(
        server.base_url + "/classify",
        files={"file": ("hand.png", image_bytes("PNG"))},
        headers={"traceparent": TRACEPARENT, "X-Request-ID": "traced-1"},
        timeout=60,
    )
    assert response.status_code == 200
    expected = {"POST /classify", "read", "decode", "queue wait", "model call", "encode"}

    def joined() -> dict[str, Any] | None:
        spans = {
            span.name: (service, span)
            for service, span in collector.spans()
            if span.trace_id.hex() == INCOMING_TRACE_ID
        }
        return spans if expected <= spans.keys() else None

    spans = eventually(joined)
    service, server_span = spans["POST /classify"]
    assert service == "cellsign-under-test"
    assert server_span.parent_span_id.hex() == INCOMING_SPAN_ID
