"""``python -m app`` as a real process: the limits that live in the HTTP server (head size,
keep-alive, connection limit), the per-endpoint body caps on the wire, security headers and
the start-up warning. Raw sockets send what an HTTP client library would not."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import httpx
import pytest

from app.api.middleware.headers import PAGE_CSP
from app.api.middleware.limits import MAX_FORM_FIELDS, MULTIPART_OVERHEAD_BYTES
from app.server import listening_sockets, server_config
from app.settings import Settings
from benchmarks.servers import AppServer, cpu_seconds
from tests.app.helpers import python_output
from tests.raw_http import (
    MULTIPART_TYPE,
    connect,
    head,
    multipart,
    read_response,
    seconds_until_closed,
    send_chunked_until_answered,
)

MAX_UPLOAD_BYTES = 200_000
MAX_FILES = 4
ONE_FILE_CAP = MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES
KEEP_ALIVE_S = 2
MAX_CONCURRENCY = 6
MAX_HEADER_BYTES = 16 * 1024
BODY_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def server(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    env = {
        "MODEL_DIR": str(quick_models),
        "DEVICE": "cpu",
        "RELOAD_INTERVAL_S": "0",
        "LOG_LEVEL": "warning",
        "API_KEY": "",
        "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "MAX_FILES_PER_REQUEST": str(MAX_FILES),
        "KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_S),
        "MAX_CONCURRENCY": str(MAX_CONCURRENCY),
        "MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "BODY_READ_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    log = tmp_path_factory.mktemp("app_server") / "server.log"
    with AppServer(env, log) as running:
        yield running


def test_server_config_takes_every_limit_from_the_settings() -> None:
    settings = Settings(
        max_header_bytes=4096,
        keep_alive_timeout_s=7,
        max_concurrency=11,
        graceful_shutdown_s=13,
        forwarded_allow_ips="10.0.0.0/8",
        port=8123,
    )
    config = server_config(settings)
    assert config.http == "app.protocol:HeadLimitedHttpToolsProtocol"
    assert config.h11_max_incomplete_event_size == 4096  # the head limit that protocol reads
    assert not config.access_log  # the app logs each request itself
    assert (config.timeout_keep_alive, config.limit_concurrency) == (7, 11)
    assert config.timeout_graceful_shutdown == 13
    assert config.proxy_headers and config.forwarded_allow_ips == "10.0.0.0/8"
    assert (config.host, config.port) == ("127.0.0.1", 8123)


def test_worker_connections_send_small_writes_at_once() -> None:
    """A worker process gets its listening socket through multiprocessing's pickler, as
    uvicorn's supervisor sends it; asyncio must then turn Nagle's algorithm off on what it
    accepts, or the body written after the head waits for the client's delayed ACK."""
    listener = listening_sockets("127.0.0.1", 0, 1)[0]
    in_worker = ForkingPickler.loads(ForkingPickler.dumps(listener))
    listener.close()

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[int] = loop.create_future()

        class Accept(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await loop.create_server(Accept, sock=in_worker)
        async with server:
            _, writer = await asyncio.open_connection(*in_worker.getsockname()[:2])
            try:
                return await asyncio.wait_for(accepted, 10)
            finally:
                writer.close()

    assert asyncio.run(accepted_nodelay()) != 0


def test_a_head_that_never_ends_is_refused_at_the_size_limit(server: AppServer) -> None:
    """The measured attack: a huge header, never finished. It must be cut off once past
    MAX_HEADER_BYTES, cheaply, while /healthz keeps answering."""
    cpu_before = cpu_seconds(server.pid)
    with connect(server.base_url) as sock:
        sock.sendall(head("GET", "/healthz") + b"X-Filler: ")
        start = time.monotonic()
        sent = 0
        try:
            while sent < 8 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_response(sock, timeout_s=5)
        elapsed = time.monotonic() - start
    assert answer is not None and answer.status == 431, answer
    assert f"{MAX_HEADER_BYTES} byte limit" in answer.json()["detail"]
    assert elapsed < 3
    assert cpu_seconds(server.pid) - cpu_before < 1.0
    assert httpx.get(server.base_url + "/healthz", timeout=2).status_code == 200


def test_heads_under_the_limit_are_served_on_one_connection(server: AppServer) -> None:
    """The count starts afresh for each request of a keep-alive connection, and a read that
    brings a whole head with a large body behind it is not taken for a long head."""
    filler = {"X-Filler": "a" * (MAX_HEADER_BYTES * 2 // 3)}
    body = multipart([("file", "x.png", b"\0" * (MAX_HEADER_BYTES * 4))])
    with connect(server.base_url) as sock:
        for _ in range(2):
            sock.sendall(head("GET", "/healthz", filler) + b"\r\n")
            answer = read_response(sock, timeout_s=5)
            assert answer is not None and answer.status == 200, answer
        headers = {"Content-Type": MULTIPART_TYPE, "Content-Length": str(len(body))}
        sock.sendall(head("POST", "/denoise", headers) + b"\r\n" + body)
        answer = read_response(sock, timeout_s=5)
    assert answer is not None and answer.status == 415, answer  # refused as no image


def test_an_idle_keep_alive_connection_is_closed(server: AppServer) -> None:
    with connect(server.base_url) as sock:
        sock.sendall(head("GET", "/healthz") + b"\r\n")
        answer = read_response(sock, timeout_s=5)
        assert answer is not None and answer.status == 200
        closed_after = seconds_until_closed(sock, timeout_s=KEEP_ALIVE_S + 5)
    assert closed_after < KEEP_ALIVE_S + 2


def test_connections_past_the_concurrency_limit_get_503_but_probes_pass(server: AppServer) -> None:
    idle = [connect(server.base_url) for _ in range(MAX_CONCURRENCY)]
    try:
        time.sleep(0.2)  # let the server accept them all
        refused = httpx.get(server.base_url + "/models", timeout=5)
        probe = httpx.get(server.base_url + "/healthz", timeout=5)  # probes pass the limit
    finally:
        for sock in idle:
            sock.close()
    assert refused.status_code == 503
    assert "too many connections" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "1"
    assert probe.status_code == 200
    time.sleep(0.2)
    assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("path", ["/denoise", "/similar"])
def test_a_declared_body_over_one_file_is_refused_before_it_is_sent(
    server: AppServer, path: str
) -> None:
    with connect(server.base_url) as sock:
        headers = {"Content-Type": MULTIPART_TYPE, "Content-Length": str(ONE_FILE_CAP + 1)}
        sock.sendall(head("POST", path, headers) + b"\r\n")
        answer = read_response(sock, timeout_s=5)
    assert answer is not None and answer.status == 413
    assert f"{ONE_FILE_CAP} byte limit" in answer.json()["detail"]


def test_classify_takes_several_files_worth_where_one_file_endpoints_refuse(
    server: AppServer,
) -> None:
    """Two files just under the per-file limit: over a one-file endpoint's cap, well
    within /classify's; /classify goes on to decode them (415: they are not images)."""
    parts = [("file", f"{n}.bin", b"\x01" * (MAX_UPLOAD_BYTES - 1000)) for n in range(2)]
    body = multipart(parts)
    assert ONE_FILE_CAP < len(body) < MAX_FILES * MAX_UPLOAD_BYTES
    headers = {"Content-Type": MULTIPART_TYPE}
    classify = httpx.post(server.base_url + "/classify", content=body, headers=headers)
    denoise = httpx.post(server.base_url + "/denoise", content=body, headers=headers)
    assert classify.status_code == 415, classify.text
    assert denoise.status_code == 413, denoise.text


@pytest.mark.parametrize("path", ["/denoise", "/classify"])
def test_a_chunked_body_is_cut_off_at_the_endpoints_cap(server: AppServer, path: str) -> None:
    cap = (
        ONE_FILE_CAP
        if path == "/denoise"
        else MAX_FILES * MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES
    )
    with connect(server.base_url) as sock:
        headers = {"Content-Type": MULTIPART_TYPE, "Transfer-Encoding": "chunked"}
        sock.sendall(head("POST", path, headers) + b"\r\n")
        first = multipart([("file", "x.png", b"")]).removesuffix(b"\r\n--cellsign-test--\r\n")
        sock.sendall(f"{len(first):x}\r\n".encode() + first + b"\r\n")
        sent, answer = send_chunked_until_answered(sock, b"\0" * 16384, max_bytes=200 * 2**20)
    assert answer is not None and answer.status == 413, answer
    assert f"{cap} byte limit" in answer.json()["detail"]
    assert sent < 200 * 2**20  # refused as it streamed, not after all of it


@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
def test_a_stalled_body_gets_408_and_loses_its_connection(server: AppServer, framing: str) -> None:
    part = multipart([("file", "x.png", b"\0" * 100_000)])[:50_000]
    headers = {"Content-Type": MULTIPART_TYPE}
    if framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        sent = f"{len(part):x}\r\n".encode() + part + b"\r\n"
    else:
        headers["Content-Length"] = str(len(part) * 2)
        sent = part
    with connect(server.base_url) as sock:
        sock.sendall(head("POST", "/denoise", headers) + b"\r\n" + sent)
        start = time.monotonic()
        answer = read_response(sock, timeout_s=BODY_TIMEOUT_S + 10)
        answered_after = time.monotonic() - start
        closed_after = seconds_until_closed(sock, timeout_s=5)
    assert answer is not None and answer.status == 408, answer
    assert "no request body data" in answer.json()["detail"]
    assert BODY_TIMEOUT_S - 0.5 <= answered_after <= BODY_TIMEOUT_S + 3
    assert closed_after < 1  # not left to the keep-alive timeout


def test_many_text_fields_are_refused(server: AppServer) -> None:
    fields = {f"field{n}": "x" * 1000 for n in range(MAX_FORM_FIELDS + 1)}
    files = {"file": ("x.png", b"\x89PNG")}
    response = httpx.post(server.base_url + "/classify", data=fields, files=files)
    assert response.status_code == 400
    assert "Too many fields" in response.json()["detail"]


def test_a_large_text_field_is_refused(server: AppServer) -> None:
    files = {"file": ("x.png", b"\x89PNG")}
    data = {"note": "x" * 100_000}
    response = httpx.post(server.base_url + "/classify", data=data, files=files)
    assert response.status_code == 400
    assert "maximum size" in response.json()["detail"]


def test_the_page_and_its_files_carry_security_headers(server: AppServer) -> None:
    for path in ("/", "/static/app.js", "/static/style.css"):
        response = httpx.get(server.base_url + path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == PAGE_CSP, path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["referrer-policy"] == "no-referrer", path


def test_every_response_is_nosniff_and_unframeable(server: AppServer) -> None:
    for path in ("/healthz", "/models", "/no-such-page", "/docs"):
        response = httpx.get(server.base_url + path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
    # Swagger UI loads from a CDN: the page's policy would break it.
    assert "content-security-policy" not in httpx.get(server.base_url + "/docs").headers


def test_start_up_warns_what_is_open_without_an_api_key(server: AppServer) -> None:
    warnings = [line for line in server.log_tail(20_000).splitlines() if "API_KEY" in line]
    assert len(warnings) == 1, server.log_tail()
    assert " WARNING " in warnings[0]
    for path in ("/admin/reload", "/metrics", "/models"):
        assert path in warnings[0]


def test_the_supervisor_of_several_workers_does_not_load_tensorflow() -> None:
    """Only the workers serve; TensorFlow in the supervising process would cost its memory
    (about 600 MB) for nothing."""
    script = (
        "import sys\n"
        "from app.server import server_config\n"
        "from app.settings import Settings\n"
        "server_config(Settings(workers=2))\n"
        "print('tensorflow' in sys.modules)\n"
    )
    assert python_output(script).strip() == "False"
