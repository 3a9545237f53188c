"""Property-based checks (hypothesis) of the upload endpoints on the real quick models.

* any real image, whatever its size, colour mode and format, gets a valid 200 answer;
* bytes that are not an image (random, or random after a format's signature) get a 4xx;
* a real image with random bytes overwritten or cut off gets a 200 or a 4xx, never a 5xx;
* numbers in the query, the path and X-Request-Timeout that are not ASCII, or too long,
  (Unicode digits, thousands of digits, signs, spaces) get a 422, never a 5xx.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.main import create_app
from app.settings import Settings
from tests.app.helpers import running_client, settings_for
from tests.app.samples import image_bytes

pytestmark = pytest.mark.anyio

ENDPOINTS = ("/classify", "/denoise", "/similar")
# The colour modes each format can store (Pillow converts anything else on save).
FORMAT_MODES = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "BMP": ("1", "L", "P", "RGB"),
    "GIF": ("L", "P"),
    "WEBP": ("RGB", "RGBA"),
    "TIFF": ("1", "L", "RGB", "RGBA", "CMYK", "I;16"),
}
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"RIFF")
EXAMPLES = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
async def api(quick_models: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(create_app(settings_for(quick_models))) as client:
        yield client


@st.composite
def real_images(draw: st.DrawFn) -> tuple[bytes, str, tuple[int, int]]:
    """Noise pixels in a random size, then a random format and one of its colour modes."""
    image_format = draw(st.sampled_from(sorted(FORMAT_MODES)))
    mode = draw(st.sampled_from(FORMAT_MODES[image_format]))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(buffer, format=image_format)
    return buffer.getvalue(), f"{mode} {image_format}", (width, height)


def not_images() -> st.SearchStrategy[bytes]:
    noise = st.binary(min_size=0, max_size=2048)
    signature_then_noise = st.builds(
        lambda start, rest: start + rest, st.sampled_from(SIGNATURES), noise
    )
    return st.one_of(noise, signature_then_noise)


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    """A real image with a few bytes overwritten, then possibly cut short."""
    image_format = draw(st.sampled_from(sorted(FORMAT_MODES)))
    data = bytearray(image_bytes(image_format, size=(40, 30)))
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


async def post(client: httpx.AsyncClient, path: str, data: bytes, name: str) -> httpx.Response:
    """Post one upload, then check the server is still ready whatever the answer was."""
    response = await client.post(
        path, files={"file": (name, data)}, headers={"Accept": "application/json"}
    )
    assert (await client.get("/readyz")).status_code == 200
    return response


def assert_refused(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]


@EXAMPLES
@given(image=real_images(), path=st.sampled_from(ENDPOINTS))
async def test_any_real_image_gets_a_valid_answer(
    api: httpx.AsyncClient, image: tuple[bytes, str, tuple[int, int]], path: str
) -> None:
    data, description, size = image
    response = await post(api, path, data, "random")
    assert response.status_code == 200, f"{description} {size}: {response.text[:300]}"
    body = response.json()
    if path == "/classify":
        (prediction,) = body["predictions"]
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    elif path == "/denoise":
        denoised = Image.open(io.BytesIO(base64.b64decode(body["image_base64"])))
        assert denoised.size == (body["width"], body["height"])
    else:
        assert body["results"] and all(r["distance"] >= -1e-6 for r in body["results"])


@EXAMPLES
@given(data=not_images(), path=st.sampled_from(ENDPOINTS))
async def test_bytes_that_are_not_an_image_get_a_4xx(
    api: httpx.AsyncClient, data: bytes, path: str
) -> None:
    assert_refused(await post(api, path, data, "noise.png"))


@EXAMPLES
@given(data=damaged_images(), path=st.sampled_from(ENDPOINTS))
async def test_damaged_images_are_served_or_refused_never_a_5xx(
    api: httpx.AsyncClient, data: bytes, path: str
) -> None:
    response = await post(api, path, data, "damaged")
    if response.status_code != 200:
        assert_refused(response)


MAX_K = Settings.model_fields["max_k"].default


def number_like_text() -> st.SearchStrategy[str]:
    """Text a number reader may stumble on: Unicode digits and number forms (``int()`` and
    ``float()`` take some, ``isdigit()`` others), runs of ASCII digits up to past ``int()``'s
    4,300-digit limit, and short mixtures of digits, signs, dots, exponents and spaces."""
    unicode_digits = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=6)
    long_digits = st.integers(1, 6_000).map(lambda count: "9" * count)
    mixtures = st.text(st.sampled_from("0123456789.eE+-_ ²٣１"), max_size=40)
    integers = st.integers(-(10**30), 10**30).map(str)
    return st.one_of(unicode_digits, long_digits, mixtures, integers)


def is_whole_number(text: str, minimum: int) -> bool:
    """What the service takes: 1 to 18 ASCII digits, at least ``minimum``."""
    return text.isascii() and text.isdigit() and len(text) <= 18 and int(text) >= minimum


def assert_refused_naming(response: httpx.Response, location: list[str], limit: str) -> None:
    assert response.status_code == 422, response.text[:300]
    messages = [error["msg"] for error in response.json()["detail"] if error["loc"] == location]
    assert messages and limit in messages[0], response.text[:300]


@EXAMPLES
@given(item_id=number_like_text(), version=number_like_text())
async def test_gallery_numbers_are_read_or_refused_never_a_5xx(
    api: httpx.AsyncClient, item_id: str, version: str
) -> None:
    assume(item_id and "/" not in item_id and item_id not in (".", ".."))  # no number: 404
    path = f"/gallery/{quote(item_id, safe='')}.png"
    response = await api.get(path, params={"version": version})
    if not is_whole_number(item_id, 0):
        assert_refused_naming(response, ["path", "item_id"], "18 ASCII digits")
    elif not is_whole_number(version, 1):
        assert_refused_naming(response, ["query", "version"], "18 ASCII digits")
    else:
        assert response.status_code in (200, 404), response.text[:300]


@EXAMPLES
@given(k=number_like_text(), version=number_like_text())
async def test_similar_numbers_are_read_or_refused_never_a_5xx(
    api: httpx.AsyncClient, k: str, version: str
) -> None:
    upload = {"file": ("cell.png", image_bytes())}
    response = await api.post("/similar", params={"k": k, "version": version}, files=upload)
    if not is_whole_number(version, 1):
        assert_refused_naming(response, ["query", "version"], "18 ASCII digits")
    elif not (is_whole_number(k, 1) and int(k) <= MAX_K):
        assert_refused_naming(response, ["query", "k"], "whole number between 1 and")
    else:
        assert response.status_code in (200, 404), response.text[:300]


@EXAMPLES
@given(value=number_like_text())
async def test_x_request_timeout_is_read_or_refused_never_a_5xx(
    api: httpx.AsyncClient, value: str
) -> None:
    """A valid but tiny timeout is rightly shed (503); nothing else is a 5xx."""
    headers = {"X-Request-Timeout": value.encode()}
    upload = {"file": ("x.png", image_bytes())}
    response = await api.post("/classify", headers=headers, files=upload)
    if not value.isascii() or not 0 < len(value) <= 32 or response.status_code == 422:
        assert_refused_naming(response, ["header", "X-Request-Timeout"], "32 ASCII characters")
    elif response.status_code == 503:
        assert "deadline" in response.json()["detail"]
    else:
        assert response.status_code == 200, response.text[:300]
