"""docker/nginx/cellsign.conf run for real (Debian's nginx) in front of ``python -m app``.

The proxy does what uvicorn cannot: time out heads and bodies sent too slowly, buffer
uploads before a replica sees them, and cap bodies per endpoint. The file is used as it is,
except for what only makes sense inside compose: the upstream address (Docker's DNS name
``api`` with ``resolve``, which open-source nginx has only since 1.27.3) and the listen
port become loopback ones. Timeouts are the file's own, so two tests wait ~10 s each.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crossplane
import httpx
import pytest

from app.api.middleware.limits import DEFAULT_BODY_BYTES
from app.api.route_needs import body_limits
from app.api.routers import served_routes
from app.settings import Settings
from benchmarks.servers import AppServer, free_port
from tests.raw_http import (
    MULTIPART_TYPE,
    connect,
    head,
    multipart,
    read_response,
    seconds_until_closed,
    send_chunked_until_answered,
)

from .deployment_files import NGINX_CONF, serving_port

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
SLACK_S = 3.0  # timers fire on nginx's event loop; allow for a busy shared machine


def server_block() -> list[dict[str, Any]]:
    parsed = crossplane.parse(str(NGINX_CONF), check_ctx=False)
    (server,) = [d for d in parsed["config"][0]["parsed"] if d["directive"] == "server"]
    return server["block"]


def directive(block: list[dict[str, Any]], name: str) -> list[str]:
    (found,) = [d["args"] for d in block if d["directive"] == name]
    return found


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def size_bytes(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    unit = value[-1].lower()
    return int(value[:-1]) * units[unit] if unit in units else int(value)


def nginx_cap(path: str) -> int:
    """client_max_body_size nginx applies to ``path``: an exact location (``= /path``) first,
    then the regular-expression ones in order, else the server's own."""
    locations = [item for item in server_block() if item["directive"] == "location"]
    exact = [loc for loc in locations if loc["args"] == ["=", path]]
    regex = [loc for loc in locations if loc["args"][0] == "~" and re.search(loc["args"][1], path)]
    for location in [*exact, *regex]:
        return size_bytes(directive(location["block"], "client_max_body_size")[0])
    return size_bytes(directive(server_block(), "client_max_body_size")[0])


def example_path(template: str) -> str:
    return template.replace("{name}", "signs_classifier").replace("{version}", "1")


HEADER_TIMEOUT_S = seconds(directive(server_block(), "client_header_timeout")[0])
BODY_TIMEOUT_S = seconds(directive(server_block(), "client_body_timeout")[0])
ONE_FILE_CAP = nginx_cap("/denoise")


def test_body_caps_are_the_apis_own() -> None:
    """Same caps at both layers: nginx refuses what the API would, and nothing it would take."""
    settings = Settings()
    for route, limit in body_limits(served_routes(), settings):
        assert nginx_cap(example_path(route.path)) == limit, route.path
    assert nginx_cap("/healthz") == nginx_cap("/v2/models/x/ready") == DEFAULT_BODY_BYTES


def local_config(app_port: int, listen_port: int) -> str:
    """The file with the compose-only upstream and listen address swapped for loopback ones."""
    text = NGINX_CONF.read_text()
    swaps = {
        f"server api:{serving_port()} resolve;": f"server 127.0.0.1:{app_port};",
        "listen 80;": f"listen 127.0.0.1:{listen_port};",
        "resolver 127.0.0.11 valid=10s ipv6=off;": "",
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, f"{NGINX_CONF} no longer has {old!r} once"
        text = text.replace(old, new)
    return text


@dataclass
class Proxy:
    base_url: str
    body_temp: Path  # client_body_temp_path: where nginx buffers uploads
    pid: int  # the master process


@pytest.fixture(scope="module")
def proxy(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/install-nginx.sh installs Debian's)")
    root = tmp_path_factory.mktemp("nginx")
    env = {"MODEL_DIR": str(quick_models), "DEVICE": "cpu", "RELOAD_INTERVAL_S": "0"}
    env["LOG_LEVEL"] = "warning"
    with AppServer(env, root / "app.log") as app_server:
        listen_port = free_port()
        (root / "cellsign.conf").write_text(local_config(app_server.port, listen_port))
        temp_paths = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        for name in temp_paths:
            (root / name).mkdir()
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        temp_lines = "\n".join(f"  {name}_temp_path {root / name};" for name in temp_paths)
        (root / "nginx.conf").write_text(
            f"daemon off;\n{user}\nworker_processes 1;\npid {root}/nginx.pid;\n"
            f"error_log {root}/error.log info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n  access_log {root}/access.log;\n{temp_lines}\n"
            f"  include {root}/cellsign.conf;\n}}\n"
        )
        command = [NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", "stderr"]
        with (root / "nginx.out").open("wb") as out:
            nginx = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            base_url = f"http://127.0.0.1:{listen_port}"
            wait_for(base_url + "/healthz", nginx, root / "nginx.out")
            yield Proxy(base_url, root / "client_body", nginx.pid)
        finally:
            nginx.terminate()
            nginx.wait(timeout=15)


def wait_for(url: str, nginx: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if nginx.poll() is not None:
            pytest.fail(f"nginx exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"nginx not answering at {url}")


def test_requests_pass_through_to_the_api(proxy: Proxy) -> None:
    response = httpx.get(proxy.base_url + "/readyz")
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"  # set by the API


def test_a_slowloris_head_is_cut_off_at_the_header_timeout(proxy: Proxy) -> None:
    """One header line a second never completes the head; nginx closes the connection
    once the head has taken client_header_timeout, however steadily it trickles in."""
    with connect(proxy.base_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        start = time.monotonic()
        answered = b""
        try:
            for line in range(int(3 * HEADER_TIMEOUT_S)):
                sock.sendall(f"X-Line-{line}: a\r\n".encode())
                sock.settimeout(1.0)
                try:
                    answered = sock.recv(65536)
                    break  # closed (b"") or an answer
                except TimeoutError:
                    continue
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - start
    assert not answered.startswith(b"HTTP/1.1 200"), answered[:100]
    assert HEADER_TIMEOUT_S - 1 <= elapsed <= HEADER_TIMEOUT_S + SLACK_S, elapsed


def body_temp_files(proxy: Proxy) -> list[str]:
    """Buffered upload files the nginx workers hold open. nginx unlinks each one as soon as
    it is created, so they are seen through the workers' file descriptors, not the folder."""
    workers = [
        stat.parent.name
        for stat in Path("/proc").glob("[0-9]*/stat")
        if stat.read_text().rsplit(")", 1)[1].split()[1] == str(proxy.pid)
    ]
    held = []
    for worker in workers:
        for fd in Path(f"/proc/{worker}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith(str(proxy.body_temp)):
                held.append(target)
    return held


def test_a_stalled_upload_is_dropped_with_its_temp_file(proxy: Proxy) -> None:
    sent_part = b"\0" * 300_000  # past client_body_buffer_size: nginx buffers it to disk
    headers = {"Content-Type": MULTIPART_TYPE, "Content-Length": "1000000"}
    with connect(proxy.base_url) as sock:
        sock.sendall(head("POST", "/denoise", headers) + b"\r\n" + sent_part)
        stalled_at = time.monotonic()
        time.sleep(1.0)
        assert body_temp_files(proxy), "nginx did not buffer the upload to a temp file"
        seconds_until_closed(sock, timeout_s=BODY_TIMEOUT_S + SLACK_S + 2)
        elapsed = time.monotonic() - stalled_at
    assert BODY_TIMEOUT_S - 1 <= elapsed <= BODY_TIMEOUT_S + SLACK_S, elapsed
    time.sleep(0.2)
    assert body_temp_files(proxy) == []


def test_a_head_that_never_ends_is_refused_fast(proxy: Proxy) -> None:
    with connect(proxy.base_url) as sock:
        sock.sendall(head("GET", "/healthz") + b"X-Filler: ")
        start = time.monotonic()
        try:
            for _ in range(1024):  # up to 64 MB
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_response(sock, timeout_s=5)
        elapsed = time.monotonic() - start
    assert answer is not None and answer.status == 400, answer
    assert elapsed < 2


def test_a_huge_url_is_414(proxy: Proxy) -> None:
    with connect(proxy.base_url) as sock:
        sock.sendall(head("GET", "/healthz?" + "a" * 65536) + b"\r\n")
        answer = read_response(sock, timeout_s=5)
    assert answer is not None and answer.status == 414


@pytest.mark.parametrize("path", ["/denoise", "/similar", "/healthz"])
def test_a_declared_body_over_the_endpoints_cap_is_413_json_before_it_is_sent(
    proxy: Proxy, path: str
) -> None:
    cap = nginx_cap(path)
    headers = {"Content-Type": MULTIPART_TYPE, "Content-Length": str(cap + 1)}
    with connect(proxy.base_url) as sock:
        sock.sendall(head("POST", path, headers) + b"\r\n")
        answer = read_response(sock, timeout_s=5)
    assert answer is not None and answer.status == 413, answer
    assert answer.headers["content-type"] == "application/json"
    assert "limit of this endpoint" in answer.json()["detail"]


def test_classify_takes_a_body_a_one_file_endpoint_refuses(proxy: Proxy) -> None:
    """Two 5.5 MB parts: over /denoise's cap, under /classify's; the API then refuses the
    parts themselves (415: not images), which shows the body got through."""
    body = multipart([("file", f"{n}.bin", b"\x01" * 5_500_000) for n in range(2)])
    assert len(body) > ONE_FILE_CAP
    headers = {"Content-Type": MULTIPART_TYPE}
    classify = httpx.post(proxy.base_url + "/classify", content=body, headers=headers, timeout=60)
    denoise = httpx.post(proxy.base_url + "/denoise", content=body, headers=headers, timeout=60)
    assert classify.status_code == 415, classify.text
    assert denoise.status_code == 413, denoise.text


def test_a_chunked_body_over_the_cap_is_413(proxy: Proxy) -> None:
    headers = {"Content-Type": MULTIPART_TYPE, "Transfer-Encoding": "chunked"}
    with connect(proxy.base_url) as sock:
        sock.sendall(head("POST", "/similar", headers) + b"\r\n")
        sent, answer = send_chunked_until_answered(sock, b"\0" * 65536, max_bytes=200 * 2**20)
    assert answer is not None and answer.status == 413, answer
    assert sent < 200 * 2**20
