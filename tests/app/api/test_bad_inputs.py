"""The bad-input corpus against every upload endpoint: 4xx JSON or a real answer, never a 5xx.

After every request the server must still be ready, and no error may have been logged (the
catch-all 500 handler logs a traceback, so a silent bug would show up there too).
Cases already covered by ``test_rejections.py`` (misnamed field, k=0 and k="x", too many
files on /classify, streamed bodies) are not repeated here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from tests.app.bad_inputs import Case, real_images, rejected_uploads, upload
from tests.app.conftest import AppClientFactory, running_client, settings_for
from tests.app.samples import image_bytes

pytestmark = pytest.mark.anyio

ENDPOINTS = ("/classify", "/denoise", "/similar")
SINGLE_FILE_ENDPOINTS = ("/denoise", "/similar")
MAX_UPLOAD_BYTES = 200_000
MAX_FILES = 4
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def app(quick_models: Path) -> FastAPI:
    return create_app(
        settings_for(
            quick_models, max_upload_bytes=MAX_UPLOAD_BYTES, max_files_per_request=MAX_FILES
        )
    )


@pytest.fixture(scope="module")
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(app) as client:
        yield client


async def expect_refusal(client: httpx.AsyncClient, path: str, case: Case) -> None:
    response = await client.post(path, **case.request)
    assert response.status_code == case.status, f"{case.name}: {response.text[:300]}"
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert detail, f"{case.name}: empty detail"
    assert case.fragment in str(detail), f"{case.name}: {detail!r}"


async def expect_still_ready(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    assert (await client.get("/readyz")).status_code == 200
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("case", rejected_uploads(MAX_UPLOAD_BYTES), ids=lambda case: case.name)
async def test_bad_upload_is_a_4xx_with_a_clear_detail(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str, case: Case
) -> None:
    await expect_refusal(api, path, case)
    await expect_still_ready(api, caplog)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("data", "filename"),
    [(data, filename) for _, data, filename in real_images()],
    ids=[name for name, _, _ in real_images()],
)
async def test_real_image_in_any_shape_mode_or_name_is_served(
    api: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    path: str,
    data: bytes,
    filename: str,
) -> None:
    response = await api.post(path, **upload(data, filename), headers=JSON)
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    if path == "/classify":
        assert body["predictions"][0]["filename"] == filename
    elif path == "/denoise":
        assert body["image_base64"]
    else:
        assert len(body["results"]) == 5
    await expect_still_ready(api, caplog)


@pytest.mark.parametrize("path", SINGLE_FILE_ENDPOINTS)
async def test_several_files_on_a_one_file_endpoint_are_refused(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    files = [("file", (f"{n}.png", image_bytes())) for n in range(3)]
    case = Case("three file parts", {"files": files}, 422, "exactly one")
    await expect_refusal(api, path, case)
    await expect_still_ready(api, caplog)


async def test_classify_takes_as_many_files_as_allowed(api: httpx.AsyncClient) -> None:
    files = [("file", (f"{n}.png", image_bytes())) for n in range(MAX_FILES)]
    response = await api.post("/classify", files=files)
    assert response.status_code == 200
    assert [p["filename"] for p in response.json()["predictions"]] == [
        f"{n}.png" for n in range(MAX_FILES)
    ]


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_a_thousand_tiny_file_parts_are_refused(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """Past the multipart parser's own part limit (1000), before any image is decoded."""
    files = [("file", (f"{n}.png", b"x")) for n in range(1001)]
    response = await api.post(path, files=files)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.json()["detail"]
    await expect_still_ready(api, caplog)


@pytest.mark.parametrize(
    ("k", "fragment"),
    [
        (str(10**6), "between 1 and 100"),
        (str(10**30), "between 1 and 100"),
        ("-1", "greater than or equal to 1"),
        ("2.5", "integer"),
        ("", "integer"),
    ],
)
async def test_out_of_range_or_malformed_k_is_422(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, k: str, fragment: str
) -> None:
    case = Case(f"k={k}", {**upload(image_bytes()), "params": {"k": k}}, 422, fragment)
    await expect_refusal(api, "/similar", case)
    await expect_still_ready(api, caplog)


async def raw_get(app: FastAPI, raw_path: bytes) -> tuple[int, bytes]:
    """GET exactly ``raw_path``, as uvicorn passes it on: ``..`` kept, %-escapes decoded in
    ``path`` only. (httpx would normalise the dot segments away before sending.)"""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"cellsign")],
        "server": ("cellsign", 80),
        "client": ("127.0.0.1", 50000),
    }
    sent: list[dict] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]
    response_complete = asyncio.Event()

    async def receive() -> dict:
        if requests:
            return requests.pop()
        await response_complete.wait()  # file responses listen for the client leaving
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            response_complete.set()

    await app(scope, receive, send)
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return sent[0]["status"], body


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/gallery/../../etc/passwd",
        b"/gallery/1.png/../../../../etc/passwd",
        b"/static/../../etc/passwd",
        b"/static/../main.py",
        b"/static/..%2f..%2fapp%2fmain.py",
        b"/static/%2e%2e/%2e%2e/README.md",
        b"/static/%252e%252e/main.py",
        b"/static/....//....//etc/passwd",
        b"/static/%00",
        b"/gallery/99999999999999999999999999.png",
        b"/gallery/-99999999999999999999.png",
    ],
)
async def test_raw_paths_never_reach_files_outside_the_served_folders(
    app: FastAPI, api: httpx.AsyncClient, raw_path: bytes
) -> None:
    status, body = await raw_get(app, raw_path)
    assert status == 404, body[:200]
    assert b"root:" not in body and b"import" not in body


async def test_the_static_folder_itself_is_served(app: FastAPI, api: httpx.AsyncClient) -> None:
    """The control for the traversal cases: the same helper does fetch a real static file."""
    status, body = await raw_get(app, b"/static/index.html")
    assert status == 200 and b"<html" in body.lower()


async def test_a_request_without_the_api_key_is_refused_before_its_body_is_read(
    make_client: AppClientFactory, tmp_path: Path
) -> None:
    pulled = 0

    async def five_megabytes() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(50):
            pulled += 100_000
            yield b"\0" * 100_000
        yield b"\r\n--b--\r\n"

    async with make_client(tmp_path, api_key="s3cret", api_key_scope="all") as client:
        response = await client.post(
            "/classify",
            content=five_megabytes(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    assert response.status_code == 401
    assert response.json()["detail"] == "missing or wrong X-API-Key header"
    assert pulled <= 1_000_000, f"{pulled} bytes read from an unauthenticated client"
