"""X-Request-ID: kept when safe, made otherwise, on every response and in every error body."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.api.middleware.request_context import accept_or_create, with_request_id
from app.main import create_app
from tests.app.helpers import running_client, settings_for
from tests.app.samples import image_bytes

pytestmark = pytest.mark.anyio

FRESH_ID = re.compile(r"[0-9a-f]{32}")
KEY = "s3cret"
TRUNCATED_PNG = image_bytes("PNG", size=(90, 90))[:144]


@pytest.mark.parametrize(
    "given",
    ["abc-123", "0af76519-16cd-43dd-8448-eb211c80319c", "Root=1-5e1b4151:x/y+z.~_", "a" * 128],
)
def test_a_safe_id_is_kept(given: str) -> None:
    assert accept_or_create(given) == given


@pytest.mark.parametrize(
    "given", [None, "", "a" * 129, "two words", "line\nbreak", 'quote"', "<script>", "ünï"]
)
def test_an_unsafe_or_missing_id_is_replaced_by_a_fresh_one(given: str | None) -> None:
    assert FRESH_ID.fullmatch(accept_or_create(given))


def test_only_json_objects_get_the_id() -> None:
    assert with_request_id(b'{"detail":"x"}', "r1") == b'{"detail":"x","request_id":"r1"}'
    assert (
        with_request_id(b'{"detail":"\xc3\xa9"}', "r1")
        == '{"detail":"é","request_id":"r1"}'.encode()
    )
    for body in (b"[1]", b"plain text", b"", b'{"request_id":"mine"}', b"\xff"):
        assert with_request_id(body, "r1") is None


def _boom() -> None:
    raise RuntimeError("a bug")


@pytest.fixture(scope="module")
async def guarded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    """No models (so 503s), an API key (401s), small limits (413s), and a route with a bug."""
    settings = settings_for(
        tmp_path_factory.mktemp("no_models"),
        api_key=KEY,
        max_upload_bytes=30_000,
        max_files_per_request=2,
    )
    app: FastAPI = create_app(settings)
    app.add_api_route("/boom", _boom)
    async with running_client(app) as client:
        yield client


@pytest.fixture(scope="module")
async def serving(quick_models: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(quick_models, max_files_per_request=2)
    async with running_client(create_app(settings)) as client:
        yield client


def assert_identified(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    request_id = response.headers["X-Request-ID"]
    if status >= 400:
        body = response.json()
        assert body["request_id"] == request_id
        assert "detail" in body
        assert response.headers["content-length"] == str(len(response.content))
    return request_id


async def test_a_given_id_is_echoed_and_a_bad_one_replaced(serving: httpx.AsyncClient) -> None:
    response = await serving.get("/healthz", headers={"X-Request-ID": "client-42"})
    assert assert_identified(response, 200) == "client-42"
    response = await serving.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert FRESH_ID.fullmatch(assert_identified(response, 200))


async def test_every_request_gets_its_own_id(serving: httpx.AsyncClient) -> None:
    ids = {(await serving.get("/healthz")).headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5 and all(FRESH_ID.fullmatch(request_id) for request_id in ids)


async def test_success_bodies_are_left_alone(serving: httpx.AsyncClient) -> None:
    response = await serving.get("/readyz")
    assert_identified(response, 200)
    assert "request_id" not in response.json()
    png = await serving.post("/denoise", files={"file": ("c.png", image_bytes("PNG"))})
    assert_identified(png, 200)
    assert png.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("status", "files"),
    [
        (400, {"file": ("t.png", TRUNCATED_PNG)}),
        (413, [("file", (f"{index}.png", image_bytes("PNG"))) for index in range(3)]),
        (415, {"file": ("a.txt", b"plain text")}),
        (422, None),
    ],
)
async def test_upload_errors_carry_the_id(
    serving: httpx.AsyncClient, status: int, files: dict | list | None
) -> None:
    response = await serving.post("/classify", files=files, headers={"X-Request-ID": "up-1"})
    assert assert_identified(response, status) == "up-1"


async def test_refusals_before_the_app_and_errors_after_it_carry_the_id(
    guarded: httpx.AsyncClient,
) -> None:
    keyed = {"X-API-Key": KEY}
    assert_identified(await guarded.post("/admin/reload"), 401)  # ApiKeyMiddleware
    assert_identified(await guarded.get("/no/such/page"), 404)
    assert_identified(await guarded.delete("/healthz"), 405)
    huge = {"file": ("big.png", b"\0" * 300_000)}
    assert_identified(await guarded.post("/classify", files=huge), 413)  # size middleware
    assert_identified(await guarded.post("/classify", files={"file": ("a.png", b"x")}), 503)
    assert_identified(await guarded.get("/readyz"), 503)  # a JSONResponse of the route
    assert_identified(await guarded.post("/admin/reload", headers=keyed), 200)


async def test_an_unhandled_error_still_answers_json_with_the_id(
    guarded: httpx.AsyncClient,
) -> None:
    response = await guarded.get("/boom", headers={"X-Request-ID": "bug-7"})
    assert assert_identified(response, 500) == "bug-7"
    assert response.json()["detail"] == "internal server error"
