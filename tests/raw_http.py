"""Raw-socket HTTP/1.1 for the tests that an HTTP client library cannot write: heads sent a
line at a time or never finished, bodies that stall or run past a limit in chunks.

Shared by tests/app/test_server.py (``python -m app``) and tests/docker/test_nginx.py.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(base_url: str, timeout_s: float = 10.0) -> socket.socket:
    url = urlparse(base_url)
    return socket.create_connection((url.hostname, url.port), timeout=timeout_s)


def head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    """A request head without the blank line that ends it (add b"\\r\\n" to finish it)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n").encode()


def read_response(sock: socket.socket, timeout_s: float) -> RawResponse | None:
    """The next response on ``sock``, or None when the peer closes without one."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except ConnectionResetError:
        return None
    return RawResponse(int(status_line.split()[1]), headers, body[:length])


def seconds_until_closed(sock: socket.socket, timeout_s: float) -> float:
    """Read and discard until the peer closes the connection; how long that took.

    Raises ``TimeoutError`` when it is still open after ``timeout_s``.
    """
    start = time.monotonic()
    while True:
        left = timeout_s - (time.monotonic() - start)
        if left <= 0:
            raise TimeoutError(f"connection still open after {timeout_s} s")
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                break
        except ConnectionResetError:
            break
        except TimeoutError:
            continue
    return time.monotonic() - start


def chunk(data: bytes) -> bytes:
    """One chunk of a ``Transfer-Encoding: chunked`` body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "cellsign-test") -> bytes:
    """A multipart/form-data body of (field, filename, content) file parts."""
    body = b""
    for field, filename, content in parts:
        body += f"--{boundary}\r\n".encode()
        body += (
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'.encode()
        )
        body += b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


MULTIPART_TYPE = "multipart/form-data; boundary=cellsign-test"


def send_chunked_until_answered(
    sock: socket.socket, piece: bytes, max_bytes: int, answer_wait_s: float = 0.005
) -> tuple[int, RawResponse | None]:
    """Send ``piece`` as chunks until a response arrives or ``max_bytes`` went out.

    Returns the bytes sent before the answer came and the answer (None if none came).
    """
    sent = 0
    sock.setblocking(True)
    try:
        while sent < max_bytes:
            sock.settimeout(answer_wait_s)
            try:
                sock.recv(1, socket.MSG_PEEK)  # an answer, or the connection closed
                break
            except (TimeoutError, BlockingIOError):
                pass
            sock.settimeout(10)
            sock.sendall(chunk(piece))
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent, read_response(sock, timeout_s=10)
