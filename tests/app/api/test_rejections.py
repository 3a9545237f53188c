"""Bad input gets a 4xx JSON ``detail`` (never a 5xx) and the server keeps serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from tests.app.conftest import running_client, settings_for
from tests.app.samples import image_bytes

pytestmark = pytest.mark.anyio

LIMITS = {
    "max_upload_bytes": 30_000,
    "max_image_pixels": 100 * 100,
    "max_files_per_request": 3,
    "max_k": 10,
}


@pytest.fixture(scope="module")
async def strict(quick_models: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app with small limits, so every limit is cheap to cross."""
    async with running_client(create_app(settings_for(quick_models, **LIMITS))) as client:
        yield client


def one_file(data: bytes, filename: str = "x.png") -> dict:
    return {"file": (filename, data)}


async def expect(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in str(response.json()["detail"])


@pytest.mark.parametrize("path", ["/classify", "/denoise", "/similar"])
async def test_text_is_415_and_truncated_image_is_400(strict: httpx.AsyncClient, path: str) -> None:
    await expect(await strict.post(path, files=one_file(b"plain text", "a.txt")), 415, "a.txt")
    whole = image_bytes("PNG", size=(90, 90))
    truncated = whole[: len(whole) // 2]
    await expect(await strict.post(path, files=one_file(truncated, "t.png")), 400, "t.png")


async def test_empty_file_is_400(strict: httpx.AsyncClient) -> None:
    await expect(await strict.post("/classify", files=one_file(b"", "e.png")), 400, "empty")


async def test_file_over_the_byte_limit_is_413(strict: httpx.AsyncClient) -> None:
    big = image_bytes("BMP", size=(99, 99)) + b"\0" * 30_000
    await expect(await strict.post("/classify", files=one_file(big, "big.bmp")), 413, "bytes")


async def test_body_over_the_request_limit_is_413(strict: httpx.AsyncClient) -> None:
    huge = b"\0" * (30_000 * 3 + 200_000)
    response = await strict.post("/classify", files=one_file(huge))
    assert response.status_code == 413
    assert response.json()["detail"]


async def test_streamed_body_without_length_is_cut_off_at_the_limit_with_413(
    strict: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 10_000

    response = await strict.post(
        "/classify", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413
    assert "byte limit" in response.json()["detail"]


async def test_image_over_the_pixel_limit_is_413(strict: httpx.AsyncClient) -> None:
    wide = image_bytes("PNG", size=(101, 100))
    await expect(await strict.post("/denoise", files=one_file(wide)), 413, "pixel limit")


async def test_too_many_files_is_413(strict: httpx.AsyncClient) -> None:
    files = [("file", (f"{n}.png", image_bytes())) for n in range(4)]
    await expect(await strict.post("/classify", files=files), 413, "at most 3")


@pytest.mark.parametrize("path", ["/classify", "/denoise", "/similar"])
async def test_missing_or_misnamed_file_field_is_422(strict: httpx.AsyncClient, path: str) -> None:
    await expect(await strict.post(path), 422, "file")
    misnamed = {"image": ("x.png", image_bytes())}
    await expect(await strict.post(path, files=misnamed), 422, "file")


@pytest.mark.parametrize(
    ("k", "fragment"), [("0", "greater"), ("11", "between 1 and 10"), ("x", "integer")]
)
async def test_bad_k_is_422(strict: httpx.AsyncClient, k: str, fragment: str) -> None:
    response = await strict.post("/similar", params={"k": k}, files=one_file(image_bytes()))
    await expect(response, 422, fragment)


async def test_bad_denoise_size_is_422(strict: httpx.AsyncClient) -> None:
    response = await strict.post("/denoise", params={"size": "huge"}, files=one_file(image_bytes()))
    await expect(response, 422, "original")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/gallery/abc.png", 422),
        ("/gallery/1e3.png", 422),
        ("/gallery/99999999.png", 404),
        ("/gallery/-1.png", 404),
        ("/gallery/..%2F..%2Fapp%2Fmain.py", 404),
        ("/gallery/..%2F..%2Fetc%2Fpasswd.png", 404),
        ("/gallery/%2E%2E/%2E%2E/README.md", 404),
        ("/gallery/1.png/../../../../etc/passwd", 404),
    ],
)
async def test_gallery_ids_are_integers_never_paths(
    strict: httpx.AsyncClient, path: str, status: int
) -> None:
    response = await strict.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"


async def test_the_server_still_serves_after_all_that(strict: httpx.AsyncClient) -> None:
    response = await strict.post("/classify", files=one_file(image_bytes()))
    assert response.status_code == 200


async def test_endpoints_answer_503_naming_the_cause_when_nothing_is_loaded(
    tmp_path: Path,
) -> None:
    async with running_client(create_app(settings_for(tmp_path))) as client:
        assert (await client.get("/healthz")).status_code == 200
        for path in ("/classify", "/denoise", "/similar"):
            response = await client.post(path, files=one_file(image_bytes()))
            await expect(response, 503, "no version folder")
        await expect(await client.get("/gallery/1.png"), 503, "malaria_index")


async def test_a_genuine_bug_is_a_json_500_and_the_server_keeps_serving(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path))

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    async with running_client(app) as client:
        await expect(await client.get("/bug"), 500, "internal server error")
        assert (await client.get("/healthz")).status_code == 200
