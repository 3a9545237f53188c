"""A cell as the gallery stores it: its PNG, its mode and size, and the digest naming it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.imaging import DecodeLimits, decode_for_model
from app.core.index import load_index
from app.gallery.images import (
    GALLERY_SIDE,
    model_batch,
    offline_image,
    stored_image,
    stored_pixels,
)
from app.gallery.store import content_digest
from tests.app.samples import gradient_image, image_bytes

LIMITS = DecodeLimits(
    max_bytes=10 * 1024 * 1024,
    max_pixels=16_000_000,
    max_full_decode_pixels=4_000_000,
    max_jpeg_scans=32,
)


def through_the_gate(data: bytes) -> Image.Image | np.ndarray:
    """What the POST /gallery route hands over: the input gate's decode at gallery size."""
    return decode_for_model(data, "upload", LIMITS, (GALLERY_SIDE, GALLERY_SIDE)).image


def decoded(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        image.load()
        return image.copy()


def test_a_small_colour_cell_is_stored_as_it_is() -> None:
    image = gradient_image((60, 40))
    cell = stored_image(image)
    again = decoded(cell.png)
    assert (again.mode, again.size) == ("RGB", (60, 40))
    assert np.array_equal(np.asarray(again), np.asarray(image))
    assert cell.digest == content_digest("RGB", (60, 40), image.tobytes())


@pytest.mark.parametrize("size", [(1024, 512), (300, 2000), (257, 257)])
def test_a_large_cell_is_scaled_to_fit_keeping_its_aspect(size: tuple[int, int]) -> None:
    cell = stored_image(gradient_image(size))
    stored = decoded(cell.png)
    assert max(stored.size) == GALLERY_SIDE
    assert stored.size[0] / stored.size[1] == pytest.approx(size[0] / size[1], rel=0.02)
    assert cell.digest == content_digest(stored.mode, stored.size, stored.tobytes())


def test_grey_pixels_are_kept_grey_so_an_offline_cell_and_its_upload_match() -> None:
    grey = gradient_image((50, 50), "L")
    from_rgb = stored_image(grey.convert("RGB"))  # what the gate hands over for a grey file
    from_grey = stored_image(grey)
    assert decoded(from_rgb.png).mode == "L"
    assert from_rgb.digest == from_grey.digest


@pytest.mark.parametrize("mode", ["P", "CMYK", "I;16", "LA", "YCbCr"])
def test_other_modes_become_rgb_or_grey(mode: str) -> None:
    cell = stored_image(gradient_image((32, 32)).convert(mode))
    assert decoded(cell.png).mode in ("RGB", "L")


def test_rgba_keeps_its_alpha() -> None:
    image = gradient_image((20, 20), "RGBA")
    image.putalpha(128)
    assert decoded(stored_image(image).png).mode == "RGBA"


def test_the_same_cell_in_any_file_format_has_one_digest() -> None:
    """A lossless re-encoding of the same pixels (PNG, BMP, TIFF) is the same item, and so
    is the small JPEG the gate decodes straight to an array and that JPEG through Pillow."""
    digests = {
        stored_image(through_the_gate(image_bytes(kind, (64, 48)))).digest
        for kind in ("PNG", "BMP", "TIFF")
    }
    assert len(digests) == 1
    jpeg = image_bytes("JPEG", (64, 48), quality=90)
    straight = through_the_gate(jpeg)
    with Image.open(io.BytesIO(jpeg)) as opened:
        pillow = opened.convert("RGB")
    assert stored_image(straight).digest == stored_image(pillow).digest


def test_an_upload_keeps_no_byte_of_its_file() -> None:
    """The stored PNG is encoded anew: text chunks of the upload do not survive."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * 1000)
    buffer = io.BytesIO()
    gradient_image((40, 40)).save(buffer, format="PNG", pnginfo=info)
    cell = stored_image(through_the_gate(buffer.getvalue()))
    assert b"Comment" not in cell.png and cell.png != buffer.getvalue()


def test_an_offline_cell_keeps_its_png_and_matches_its_upload(quick_models: Path) -> None:
    index = load_index(quick_models / "malaria_index" / "1")
    png = index.image_png(int(index.ids[0]))
    assert png is not None
    cell = offline_image(png)
    assert cell.png == png  # trusted, already within the rules: not encoded again
    assert stored_image(through_the_gate(png)).digest == cell.digest
    assert cell.digest == stored_image(through_the_gate(cell.png)).digest


def test_stored_pixels_and_model_batch_give_the_encoder_its_input() -> None:
    cell = stored_image(gradient_image((100, 80)))
    batch = model_batch([stored_pixels(cell.png), cell.image], 48, 48)
    assert batch.shape == (2, 48, 48, 3) and batch.dtype == np.float32
    assert np.array_equal(batch[0], batch[1])
    assert batch.min() >= 0.0 and batch.max() <= 1.0
