"""Pixel conversion: every Pillow mode to RGB, alpha over black, wide integers scaled down."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from contract.pixels import model_input, rgb_pixels, scale, to_rgb
from tests.app.samples import gradient_image

FULL_16_BIT = np.full((4, 6), 65535, np.uint16)


def sixteen_bit(mode: str, values: np.ndarray = FULL_16_BIT) -> Image.Image:
    """A 16-bit grey image in ``mode`` built from raw bytes (``convert`` would clip to 255)."""
    dtype = ">u2" if mode == "I;16B" else "<u2" if mode in ("I;16", "I;16L") else "=u2"
    height, width = values.shape
    return Image.frombytes(mode, (width, height), values.astype(dtype).tobytes())


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_sixteen_bit_full_scale_becomes_white(mode: str) -> None:
    assert np.asarray(to_rgb(sixteen_bit(mode))).min() == 255


def test_thirty_two_bit_integers_are_read_on_the_sixteen_bit_scale() -> None:
    image = Image.fromarray(np.array([[0, 257 * 100, 65535, 10**6]], np.int32), mode="I")
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 100, 255, 255]


def test_float_images_are_read_on_the_eight_bit_scale_and_clipped() -> None:
    image = Image.fromarray(np.array([[-5.0, 0.0, 100.0, 255.0, 400.0]], np.float32), mode="F")
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 0, 100, 255, 255]


@pytest.mark.parametrize("mode", ["RGBA", "RGBa", "LA", "La", "PA"])
def test_transparent_pixels_become_black_and_half_transparent_ones_half_as_bright(
    mode: str,
) -> None:
    image = Image.new("RGBA", (2, 1), (200, 200, 200, 0))
    image.putpixel((1, 0), (200, 200, 200, 128))
    if mode == "La":
        image = image.convert("LA")  # Pillow's RGBA -> La drops the alpha
    pixels = np.asarray(to_rgb(image.convert(mode)))
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert np.all(np.abs(pixels[0, 1].astype(int) - 100) <= 1)


def test_a_palette_colour_marked_transparent_becomes_black() -> None:
    image = Image.new("P", (2, 1), 1)
    image.putpalette([0, 0, 0, 250, 250, 250, 10, 20, 30])
    image.putpixel((1, 0), 2)
    image.info["transparency"] = 1
    assert np.asarray(to_rgb(image))[0].tolist() == [[0, 0, 0], [10, 20, 30]]


@pytest.mark.parametrize(
    "mode", ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
             "LAB", "HSV", "I", "F"],
)  # fmt: skip
def test_every_mode_becomes_rgb_of_the_same_size(mode: str) -> None:
    rgb = to_rgb(gradient_image((6, 4)).convert(mode))
    assert (rgb.mode, rgb.size) == ("RGB", (6, 4))


def test_model_input_is_float_in_unit_range_at_the_requested_size() -> None:
    pixels = model_input(gradient_image((100, 50)), height=48, width=32)
    assert pixels.shape == (48, 32, 3)
    assert pixels.dtype == np.float32
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert pixels.max() > 0.9  # the gradient reaches white: values were scaled, not clipped
    uint8 = rgb_pixels(gradient_image((100, 50)), 48, 32)
    np.testing.assert_allclose(pixels, uint8 / 255.0, rtol=1e-6)


def test_scaling_maps_every_byte_onto_the_unit_range() -> None:
    every_byte = np.arange(256, dtype=np.uint8)
    scaled = scale(every_byte)
    assert scaled.dtype == np.float32
    assert scaled[0] == 0.0 and scaled[-1] == 1.0 and np.all(np.diff(scaled) > 0)
