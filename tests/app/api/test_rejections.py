"""Bad input gets a 4xx JSON ``detail`` (never a 5xx) and the server keeps serving.

One app with small limits serves every case, so each limit is cheap to cross. After each
corpus request the server must still be ready and no error may have been logged (the
catch-all 500 handler logs a traceback, so a silent bug would show up there too).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from tests.app.bad_inputs import Case, real_images, rejected_uploads, upload
from tests.app.helpers import AppClientFactory, running_client, settings_for
from tests.app.samples import image_bytes

pytestmark = pytest.mark.anyio

ENDPOINTS = ("/classify", "/denoise", "/similar")
SINGLE_FILE_ENDPOINTS = ("/denoise", "/similar")
MAX_UPLOAD_BYTES = 200_000
MAX_IMAGE_PIXELS = 200 * 200
MAX_FILES = 3
MAX_K = 10
BEYOND_THE_BODY_LIMIT = MAX_UPLOAD_BYTES * (MAX_FILES + 1) + 200_000
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def app(quick_models: Path) -> FastAPI:
    limits = {
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "max_image_pixels": MAX_IMAGE_PIXELS,
        "max_files_per_request": MAX_FILES,
        "max_k": MAX_K,
    }
    return create_app(settings_for(quick_models, **limits))


@pytest.fixture(scope="module")
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(app) as client:
        yield client


def expect(response: httpx.Response, status: int, fragment: str = "") -> None:
    """The answer has ``status``, is JSON, and its non-empty ``detail`` names ``fragment``."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert detail, "empty detail"
    assert fragment in str(detail), detail


async def expect_still_ready(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    assert (await client.get("/readyz")).status_code == 200
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "case", rejected_uploads(MAX_UPLOAD_BYTES, MAX_IMAGE_PIXELS), ids=lambda case: case.name
)
async def test_bad_upload_is_a_4xx_with_a_clear_detail(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str, case: Case
) -> None:
    expect(await api.post(path, **case.request), case.status, case.fragment)
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


async def test_body_over_the_request_limit_is_413(api: httpx.AsyncClient) -> None:
    response = await api.post("/classify", **upload(b"\0" * BEYOND_THE_BODY_LIMIT))
    expect(response, 413, "byte limit")


async def test_streamed_body_without_length_is_cut_off_at_the_limit_with_413(
    api: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(BEYOND_THE_BODY_LIMIT // 10_000):
            yield b"\0" * 10_000

    response = await api.post(
        "/classify", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    expect(response, 413, "byte limit")


async def test_too_many_files_is_413(api: httpx.AsyncClient) -> None:
    files = [("file", (f"{n}.png", image_bytes())) for n in range(MAX_FILES + 1)]
    expect(await api.post("/classify", files=files), 413, f"at most {MAX_FILES}")


async def test_classify_takes_as_many_files_as_allowed(api: httpx.AsyncClient) -> None:
    files = [("file", (f"{n}.png", image_bytes())) for n in range(MAX_FILES)]
    response = await api.post("/classify", files=files)
    assert response.status_code == 200
    assert [p["filename"] for p in response.json()["predictions"]] == [
        f"{n}.png" for n in range(MAX_FILES)
    ]


@pytest.mark.parametrize("path", SINGLE_FILE_ENDPOINTS)
async def test_several_files_on_a_one_file_endpoint_are_refused(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    files = [("file", (f"{n}.png", image_bytes())) for n in range(3)]
    expect(await api.post(path, files=files), 422, "exactly one")
    await expect_still_ready(api, caplog)


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_a_thousand_tiny_file_parts_are_refused(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """Past the multipart parser's own part limit (1000), before any image is decoded."""
    files = [("file", (f"{n}.png", b"x")) for n in range(1001)]
    response = await api.post(path, files=files)
    assert 400 <= response.status_code < 500, response.text[:300]
    expect(response, response.status_code)
    await expect_still_ready(api, caplog)


@pytest.mark.parametrize(
    ("k", "fragment"),
    [
        ("0", f"whole number between 1 and {MAX_K}"),
        ("-1", f"whole number between 1 and {MAX_K}"),
        (str(MAX_K + 1), f"whole number between 1 and {MAX_K}"),
        (str(10**6), f"whole number between 1 and {MAX_K}"),
        (str(10**30), f"whole number between 1 and {MAX_K}"),
        ("x", f"whole number between 1 and {MAX_K}"),
        ("2.5", f"whole number between 1 and {MAX_K}"),
        ("", f"whole number between 1 and {MAX_K}"),
        ("٣", f"whole number between 1 and {MAX_K}"),  # a digit, but not an ASCII one
        ("²", f"whole number between 1 and {MAX_K}"),  # isdigit() says yes, int() says no
        ("1" * 5_000, f"whole number between 1 and {MAX_K}"),  # past int()'s 4,300 digits
        (" 5", f"whole number between 1 and {MAX_K}"),
    ],
)
async def test_out_of_range_or_malformed_k_is_422(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, k: str, fragment: str
) -> None:
    response = await api.post("/similar", params={"k": k}, **upload(image_bytes()))
    expect(response, 422, fragment)
    await expect_still_ready(api, caplog)


async def test_bad_denoise_size_is_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/denoise", params={"size": "huge"}, **upload(image_bytes()))
    expect(response, 422, "original")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/gallery/abc.png", 422),
        ("/gallery/1e3.png", 422),
        ("/gallery/99999999.png", 404),
        ("/gallery/-1.png", 422),
        ("/gallery/..%2F..%2Fapp%2Fmain.py", 404),
        ("/gallery/..%2F..%2Fetc%2Fpasswd.png", 404),
        ("/gallery/%2E%2E/%2E%2E/README.md", 404),
    ],
)
async def test_gallery_ids_are_integers_never_paths(
    api: httpx.AsyncClient, path: str, status: int
) -> None:
    expect(await api.get(path), status)


async def raw_get(app: FastAPI, raw_path: bytes) -> tuple[int, bytes]:
    """GET exactly ``raw_path``, as uvicorn passes it on: ``..`` kept, %-escapes decoded in
    ``path`` only. (httpx would normalise the dot segments away before sending.)"""
    return await raw_request(app, "GET", raw_path)


async def raw_request(
    app: FastAPI,
    method: str,
    raw_path: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
) -> tuple[int, bytes]:
    """``method raw_path`` with exactly these ``headers`` (httpx would check or replace
    some, such as Content-Length) straight into the ASGI app."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"cellsign"), *headers],
        "server": ("cellsign", 80),
        "client": ("127.0.0.1", 50000),
    }
    sent: list[dict] = []
    requests = [{"type": "http.request", "body": body, "more_body": False}]
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
    ],
)
async def test_raw_paths_never_reach_files_outside_the_served_folders(
    app: FastAPI, api: httpx.AsyncClient, raw_path: bytes
) -> None:
    status, body = await raw_get(app, raw_path)
    assert status == 404, body[:200]
    assert b"root:" not in body and b"import" not in body


WHOLE_NUMBER = "in at most 18 ASCII digits"
NOT_WHOLE_NUMBERS = [
    "0",
    "-1",
    "x",
    "2.5",
    "1e3",
    "",
    " 1",
    "1_0",
    "+1",
    "٣",  # an Arabic-Indic digit
    "²",  # a superscript: isdigit() is true, int() refuses it
    "1" * 19,  # one digit past the bound
    "1" * 5_000,  # past int()'s own limit of 4,300 digits
]


@pytest.mark.parametrize("value", NOT_WHOLE_NUMBERS, ids=lambda value: repr(value[:8]))
async def test_a_version_that_is_not_a_bounded_whole_number_is_422(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    response = await api.post("/classify", params={"version": value}, **upload(image_bytes()))
    expect(response, 422, WHOLE_NUMBER)
    assert response.json()["detail"][0]["loc"] == ["query", "version"]
    expect(await api.get("/gallery/1.png", params={"version": value}), 422, WHOLE_NUMBER)
    await expect_still_ready(api, caplog)


@pytest.mark.parametrize(
    "item_id",
    [value for value in NOT_WHOLE_NUMBERS if value not in ("0", "")],
    ids=lambda value: repr(value[:8]),
)
async def test_a_gallery_id_that_is_not_a_bounded_whole_number_is_422(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, item_id: str
) -> None:
    response = await api.get(f"/gallery/{item_id}.png")
    expect(response, 422, WHOLE_NUMBER)
    assert response.json()["detail"][0]["loc"] == ["path", "item_id"]
    await expect_still_ready(api, caplog)


async def test_the_largest_gallery_id_and_version_are_a_plain_404(api: httpx.AsyncClient) -> None:
    largest = "9" * 18
    expect(await api.get(f"/gallery/{largest}.png"), 404, f"no gallery cell with id {largest}")
    (cell,) = (await api.get("/gallery", params={"limit": 1})).json()["items"]
    expect(await api.get(cell["image_url"], params={"version": largest}), 404, largest)
    assert (await api.get(cell["image_url"], params={"version": "1"})).status_code == 200


TIMEOUT_LIMIT = "at most 32 ASCII characters"


@pytest.mark.parametrize(
    "value",
    [
        b"1e999",  # float() reads inf
        b"inf",
        b"nan",
        b"-1",
        b"0",
        b"0e5",
        b" 1",
        b"1_0",
        b"1.5s",
        b"\xb2",  # a superscript 2 in Latin-1, as the server decodes header bytes
        "٣".encode(),
        b"9" * 33,
        b"9" * 10_000,
    ],
    ids=lambda value: repr(value[:8]),
)
async def test_an_x_request_timeout_that_is_not_a_bounded_number_is_422(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, value: bytes
) -> None:
    headers = {"X-Request-Timeout": value}
    response = await api.post("/similar", headers=headers, **upload(image_bytes()))
    expect(response, 422, TIMEOUT_LIMIT)
    assert response.json()["detail"][0]["loc"] == ["header", "X-Request-Timeout"]
    await expect_still_ready(api, caplog)


@pytest.mark.parametrize("value", ["2.5", "30", "1e1", ".5e2", "9" * 32])
async def test_a_plain_x_request_timeout_is_taken(api: httpx.AsyncClient, value: str) -> None:
    response = await api.post(
        "/similar", headers={"X-Request-Timeout": value}, **upload(image_bytes())
    )
    assert response.status_code == 200, response.text[:300]


@pytest.mark.parametrize("path", ["/classify", "/denoise", "/similar", "/healthz"])
@pytest.mark.parametrize(
    "declared",
    [b"\xb2", "٣".encode(), b"1" * 19, b"1" * 5_000, b"12 ", b"-1", b"0x10", b""],
    ids=lambda value: repr(value[:8]),
)
async def test_a_content_length_that_is_not_a_bounded_whole_number_is_400(
    app: FastAPI,
    api: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    path: str,
    declared: bytes,
) -> None:
    """The HTTP servers check this header themselves; any other ASGI server may not."""
    headers = [(b"content-type", b"image/png"), (b"content-length", declared)]
    status, body = await raw_request(app, "POST", path.encode(), headers, image_bytes())
    assert status == 400, body[:300]
    assert json.loads(body)["detail"] == (
        "Content-Length must be a whole number of at most 18 ASCII digits"
    )
    await expect_still_ready(api, caplog)


async def test_a_raw_body_with_a_declared_length_over_the_limit_is_413(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    headers = [(b"content-type", b"image/png"), (b"content-length", b"9" * 18)]
    status, body = await raw_request(app, "POST", b"/denoise", headers, image_bytes())
    assert status == 413, body[:300]
    assert "byte limit" in json.loads(body)["detail"]


@pytest.mark.parametrize("path", ["/models/", "/classify/", "/healthz/", "/static"])
async def test_a_trailing_slash_is_a_404_never_a_redirect_to_the_host_sent(
    api: httpx.AsyncClient, path: str
) -> None:
    """Starlette redirected ``/models/`` to an absolute URL on the request's Host."""
    response = await api.get(path, headers={"Host": "evil.example"})
    expect(response, 404, "Not Found")
    assert "location" not in response.headers


async def test_the_static_folder_itself_is_served(app: FastAPI, api: httpx.AsyncClient) -> None:
    """The control for the traversal cases: the same helper does fetch a real static file."""
    status, body = await raw_get(app, b"/static/index.html")
    assert status == 200 and b"<html" in body.lower()


async def test_the_server_still_classifies_after_all_that(api: httpx.AsyncClient) -> None:
    response = await api.post("/classify", **upload(image_bytes()))
    assert response.status_code == 200


async def test_endpoints_answer_503_naming_the_cause_when_nothing_is_loaded(
    make_client: AppClientFactory, tmp_path: Path
) -> None:
    async with make_client(tmp_path) as client:
        assert (await client.get("/healthz")).status_code == 200
        for path in ENDPOINTS:
            expect(await client.post(path, **upload(image_bytes())), 503, "no version folder")
        # The gallery is empty until the offline index loads: no cell has any id yet.
        expect(await client.get("/gallery/1.png"), 404, "no gallery cell with id 1")


async def test_a_genuine_bug_is_a_json_500_and_the_server_keeps_serving(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path))

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    async with running_client(app) as client:
        expect(await client.get("/bug"), 500, "internal server error")
        assert (await client.get("/healthz")).status_code == 200


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
