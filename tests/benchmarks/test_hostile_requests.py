"""The hostile request corpus: bodies stream what they say, every request builds, and the
sender reads an early answer from a server that stops reading and closes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from benchmarks.hostile_requests import (
    Body,
    HostileRequest,
    Segment,
    corpus,
    file_names,
    files,
    problems,
    request_head,
    send,
)


def test_a_body_streams_its_segments_in_bounded_pieces() -> None:
    body = Body.of(b"head", Segment(b"ab", 300_000), b"tail")
    pieces = list(body.chunks(64 * 1024))
    assert max(len(piece) for piece in pieces) <= 64 * 1024
    assert b"".join(pieces) == b"head" + b"ab" * 300_000 + b"tail" == body.materialize()
    assert body.size == 8 + 600_000


def test_every_request_builds_and_expects_no_server_error() -> None:
    assert file_names() == list(files())  # the corpus lists files before building them
    requests = corpus()
    assert len({request.name for request in requests}) == len(requests)
    kinds = {request.kind for request in requests}
    assert {"multipart", "raw", "v2-json", "v2-binary", "header", "path", "query"} <= kinds
    for request in requests:
        assert request.expected and max(request.expected) < 500, request.name
        headers, body = request.build()
        head = request_head(request, headers, body, "127.0.0.1:1")
        assert head.endswith(b"\r\n\r\n") and b"Connection: close" in head
        if body.chunked:
            assert b"Transfer-Encoding: chunked" in head
        elif body.size:
            assert f"Content-Length: {body.size}".encode() in head


@pytest.fixture
def early_refuser() -> Iterator[str]:
    """A server that reads the head and a little of the body, answers 413 and closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(65536)
            connection.recv(65536)
            body = b'{"detail":"too large"}'
            connection.sendall(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )

    thread = threading.Thread(target=serve)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    thread.join(timeout=10)
    listener.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_the_sender_stops_at_an_early_answer(early_refuser: str, chunked: bool) -> None:
    body = Body.of(Segment(b"\xff" * 65536, 8000))  # 500 MiB
    request = HostileRequest(
        "big",
        "raw",
        "POST",
        "/classify",
        lambda: ({}, body.as_chunked() if chunked else body),
        frozenset({413}),
    )
    answer = send(early_refuser, request, timeout_s=30)
    assert answer.status == 413 and "too large" in answer.detail
    assert answer.sent_bytes < body.size // 10
    assert problems(request, [answer]) == []
