"""The same image file becomes the same model input in training and in serving, bit for bit,
whatever its mode: both decode through ``contract.pixels``."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from app.core.imaging import DecodeLimits, decode_for_model
from contract.pixels import model_input
from tests.app.samples import gradient_image
from tests.contract.test_pixels import sixteen_bit
from training.images import decode_rgb
from training.pipeline import to_unit_float

SIZE = (40, 30)  # (width, height) of every file
HEIGHT, WIDTH = 24, 32  # the model input: every file is resized
LIMITS = DecodeLimits(
    max_bytes=10**7, max_pixels=10**7, max_full_decode_pixels=10**7, max_jpeg_scans=32
)


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def gradient(mode: str, image_format: str) -> Callable[[], bytes]:
    return lambda: encoded(gradient_image(SIZE).convert(mode), image_format)


def palette_with_transparency() -> bytes:
    image = gradient_image(SIZE).convert("P")
    image.info["transparency"] = int(np.asarray(image)[0, 0])
    return encoded(image, "PNG")


def premultiplied_grey_tiff() -> bytes:
    """A grey + alpha TIFF whose ExtraSamples tag says "associated alpha": Pillow opens it as
    ``La`` (Pillow cannot write that mode itself)."""
    data = bytearray(encoded(gradient_image(SIZE).convert("LA"), "TIFF"))
    directory = struct.unpack_from("<I", data, 4)[0]  # little-endian: Pillow writes "II"
    entries = struct.unpack_from("<H", data, directory)[0]
    for entry in range(directory + 2, directory + 2 + 12 * entries, 12):
        if struct.unpack_from("<H", data, entry)[0] == 338:  # ExtraSamples
            struct.pack_into("<H", data, entry + 8, 1)
    return bytes(data)


def wide_grey(mode: str, image_format: str) -> Callable[[], bytes]:
    ramp = (np.arange(SIZE[0] * SIZE[1]).reshape(SIZE[1], SIZE[0]) * 53).astype(np.uint16)
    if mode == "I":
        return lambda: encoded(Image.fromarray(ramp.astype(np.int32), mode="I"), image_format)
    return lambda: encoded(sixteen_bit(mode, ramp), image_format)


def float_grey() -> bytes:
    values = np.linspace(-20, 300, SIZE[0] * SIZE[1], dtype=np.float32).reshape(SIZE[1], SIZE[0])
    return encoded(Image.fromarray(values, mode="F"), "TIFF")


# Mode as the file opens -> how to make such a file. Modes no file opens in (RGBa: Pillow
# un-premultiplies on read; I;16N, HSV, RGBX: in memory only) are covered in test_pixels.
FILES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "1 (PNG)": ("1", gradient("1", "PNG")),
    "L (PNG)": ("L", gradient("L", "PNG")),
    "LA (PNG)": ("LA", gradient("LA", "PNG")),
    "La (TIFF)": ("La", premultiplied_grey_tiff),
    "P (GIF)": ("P", gradient("RGB", "GIF")),
    "P with transparency (PNG)": ("P", palette_with_transparency),
    "PA (TIFF)": ("PA", gradient("PA", "TIFF")),
    "RGB (JPEG)": ("RGB", gradient("RGB", "JPEG")),
    "RGB (WEBP)": ("RGB", gradient("RGB", "WEBP")),
    "RGBA (PNG)": ("RGBA", gradient("RGBA", "PNG")),
    "CMYK (JPEG)": ("CMYK", gradient("CMYK", "JPEG")),
    "CMYK (TIFF)": ("CMYK", gradient("CMYK", "TIFF")),
    "YCbCr (TIFF)": ("YCbCr", gradient("YCbCr", "TIFF")),
    "LAB (TIFF)": ("LAB", gradient("LAB", "TIFF")),
    "I (TIFF)": ("I", wide_grey("I", "TIFF")),
    "I;16 (PNG)": ("I;16", wide_grey("I;16", "PNG")),
    "I;16B (TIFF)": ("I;16B", wide_grey("I;16B", "TIFF")),
    "F (TIFF)": ("F", float_grey),
}


@pytest.mark.parametrize("case", FILES)
def test_one_file_gives_the_identical_model_input_in_training_and_serving(case: str) -> None:
    mode, make = FILES[case]
    data = make()
    assert Image.open(io.BytesIO(data)).mode == mode  # the file really is in that mode

    stored = decode_rgb(data, case, (HEIGHT, WIDTH))  # what the training datasets hold
    trained_on = to_unit_float(stored).numpy()  # what the tf.data pipeline feeds the model
    decoded = decode_for_model(data, case, LIMITS, target_size=(WIDTH, HEIGHT))
    served = model_input(decoded.image, HEIGHT, WIDTH)

    assert served.shape == (HEIGHT, WIDTH, 3) and served.dtype == trained_on.dtype
    np.testing.assert_array_equal(trained_on, served)
    assert served.std() > 0.01  # a real picture, not an all-black result on both sides
