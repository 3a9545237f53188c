"""A raw image body (``Content-Type: image/...``) gets the same answers as the same image sent
as a multipart ``file`` part, within the same limits; anything else is a clear 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.api.uploads import RAW_BODY_NAME, RAW_IMAGE_TYPES
from app.main import create_app
from app.settings import Settings
from tests.app.conftest import running_client, settings_for
from tests.app.samples import image_bytes

pytestmark = pytest.mark.anyio

JPEG = image_bytes("JPEG", size=(120, 90), quality=90)
MAX_UPLOAD_BYTES = 200_000


@pytest.fixture(scope="module")
async def small_limit(quick_models: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(quick_models, max_upload_bytes=MAX_UPLOAD_BYTES)
    async with running_client(create_app(settings)) as client:
        yield client


def raw(data: bytes, content_type: str) -> dict:
    return {"content": data, "headers": {"Content-Type": content_type}}


def assert_same_predictions(by_body: dict, by_form: dict) -> None:
    """Everything but the file name, probabilities to float tolerance (batch composition may
    differ between the two requests)."""
    assert by_body["model"] == by_form["model"]
    for ours, theirs in zip(by_body["predictions"], by_form["predictions"], strict=True):
        assert (ours["label"], ours["class_id"]) == (theirs["label"], theirs["class_id"])
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-6)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (JPEG, "image/jpeg"),
        (image_bytes("PNG"), "image/png"),
        (image_bytes("WEBP"), "application/octet-stream"),  # sniffed like any upload
        (image_bytes("PNG"), "image/jpeg"),  # the decoder trusts the bytes, not the label
    ],
    ids=["jpeg", "png", "octet-stream webp", "png labelled jpeg"],
)
async def test_raw_classify_equals_multipart(
    client: httpx.AsyncClient, data: bytes, content_type: str
) -> None:
    by_form = await client.post("/classify", files={"file": ("x", data)})
    by_body = await client.post("/classify", **raw(data, content_type))
    assert by_body.status_code == by_form.status_code == 200, by_body.text
    assert by_body.json()["predictions"][0]["filename"] == RAW_BODY_NAME
    assert_same_predictions(by_body.json(), by_form.json())


async def test_raw_denoise_and_similar_equal_multipart(client: httpx.AsyncClient) -> None:
    cell = image_bytes("PNG", size=(90, 80))
    for path, params in [("/denoise", {"size": "original"}), ("/similar", {"k": 3})]:
        by_form = await client.post(path, params=params, files={"file": ("c.png", cell)})
        by_body = await client.post(path, params=params, **raw(cell, "image/png"))
        assert by_body.status_code == by_form.status_code == 200, by_body.text
        assert by_body.headers["content-type"] == by_form.headers["content-type"]
        assert by_body.content == by_form.content


@pytest.mark.parametrize("path", ["/classify", "/denoise", "/similar"])
@pytest.mark.parametrize(
    ("content_type", "status", "fragment"),
    [
        ("text/plain", 415, "text/plain"),
        ("application/json", 415, "multipart/form-data"),
        ("image/svg+xml", 415, "image/jpeg"),
    ],
)
async def test_a_body_type_that_is_not_an_image_is_415(
    client: httpx.AsyncClient, path: str, content_type: str, status: int, fragment: str
) -> None:
    response = await client.post(path, **raw(image_bytes("PNG"), content_type))
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize("path", ["/classify", "/denoise", "/similar"])
async def test_empty_or_non_image_raw_body_gets_the_decode_errors(
    client: httpx.AsyncClient, path: str
) -> None:
    empty = await client.post(path, **raw(b"", "image/jpeg"))
    assert empty.status_code == 400
    assert empty.json()["detail"] == f"{RAW_BODY_NAME}: the file is empty"
    text = await client.post(path, **raw(b"just some notes", "image/png"))
    assert text.status_code == 415
    assert text.json()["detail"].startswith(RAW_BODY_NAME)


async def test_missing_body_and_content_type_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/classify")
    assert response.status_code == 422
    assert "missing `file` field" in response.json()["detail"]


async def test_oversized_raw_body_is_413_declared_or_streamed(
    small_limit: httpx.AsyncClient,
) -> None:
    big = image_bytes("BMP", size=(300, 300))  # 270 KB of pixels
    assert len(big) > MAX_UPLOAD_BYTES
    declared = await small_limit.post("/classify", **raw(big, "image/bmp"))
    assert declared.status_code == 413
    assert f"{len(big)} bytes exceeds the {MAX_UPLOAD_BYTES} limit" in declared.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 16_384):
            yield big[start : start + 16_384]

    streamed = await small_limit.post(
        "/denoise", content=chunks(), headers={"Content-Type": "image/bmp"}
    )
    assert streamed.status_code == 413
    assert f"over the {MAX_UPLOAD_BYTES} limit" in streamed.json()["detail"]
    exact = image_bytes("BMP", size=(200, 200))  # 120 KB: under the limit, served
    assert (await small_limit.post("/classify", **raw(exact, "image/bmp"))).status_code == 200


def test_openapi_documents_the_form_and_every_raw_type() -> None:
    paths = create_app(Settings(model_dir=Path("unused"))).openapi()["paths"]
    for path in ("/classify", "/denoise", "/similar"):
        body = paths[path]["post"]["requestBody"]
        assert body["required"] is True
        assert set(body["content"]) == {"multipart/form-data", *RAW_IMAGE_TYPES}
        assert body["content"]["image/jpeg"]["schema"] == {"type": "string", "format": "binary"}


@pytest.fixture(scope="module")
def server(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from benchmarks.servers import UvicornServer

    env = {
        "MODEL_DIR": str(quick_models),
        "DEVICE": "cpu",
        "RELOAD_INTERVAL_S": "0",
        "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    }
    log = tmp_path_factory.mktemp("raw") / "uvicorn.log"
    with UvicornServer("app.main:app", env, log, "/readyz") as running:
        yield running.base_url


def test_real_server_raw_jpeg_png_and_refusals(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as http:
        jpeg = JPEG
        by_form = http.post("/classify", files={"file": ("hand.jpg", jpeg)}).json()
        by_body = http.post("/classify", **raw(jpeg, "image/jpeg")).json()
        assert_same_predictions(by_body, by_form)
        png = http.post("/similar", **raw(image_bytes("PNG"), "image/png"))
        assert png.status_code == 200, png.text
        assert http.post("/denoise", **raw(b"text", "text/plain")).status_code == 415
        assert http.post("/classify", **raw(b"", "image/png")).status_code == 400

        big = image_bytes("BMP", size=(300, 300))

        def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to refuse by
            for start in range(0, len(big), 16_384):
                yield big[start : start + 16_384]

        streamed = http.post("/classify", content=chunks(), headers={"Content-Type": "image/bmp"})
        assert streamed.status_code == 413
        assert streamed.json()["detail"].startswith(RAW_BODY_NAME)
        assert http.get("/readyz").status_code == 200
