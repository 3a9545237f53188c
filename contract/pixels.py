"""Image -> model input, the one way training and serving both do it.

Any Pillow mode becomes 8-bit RGB (16- and 32-bit grey scaled down, alpha composited over
black, palette and CMYK converted), is resized bilinearly to the model's input size, and
is scaled to float32 ``pixel / 255``. Training stores the uint8 step (``rgb_pixels``) and
scales inside its ``tf.data`` pipeline with ``PIXEL_MAX``; serving calls ``model_input``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image

PIXEL_MAX = 255.0
SCALE_DESCRIPTION: Final = "pixel / 255"  # how ``metadata.json`` states the scaling

# Integer modes wider than 8 bits hold 0..65535 (``I`` is read as the same 16-bit range);
# ``F`` holds floats on the 0..255 scale.
_WIDE_INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in 8-bit RGB; transparent pixels become black."""
    if image.mode == "RGB":
        return image  # convert() would copy it
    if image.mode in _WIDE_INTEGER_MODES or image.mode == "F":
        array = np.array(image)  # one copy, in the image's own integer or float32 type
        if image.mode != "F":
            array //= 257  # 65535 -> 255; the truncated x / 257 without a float64 copy
        np.clip(array, 0, 255, out=array)
        image = Image.fromarray(array.astype(np.uint8))
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        if image.mode == "La":  # Pillow converts premultiplied grey only to LA
            image = image.convert("LA")
        image = image.convert("RGBA")  # premultiplied modes are un-premultiplied here
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def resized(image: Image.Image, height: int, width: int) -> Image.Image:
    """``image`` at ``(height, width)``, bilinear; unchanged when already that size."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR)


def rgb_pixels(image: Image.Image, height: int, width: int) -> np.ndarray:
    """``(height, width, 3)`` uint8: the form training keeps its images in."""
    return np.asarray(resized(to_rgb(image), height, width), dtype=np.uint8)


def scale(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]."""
    return np.asarray(pixels, dtype=np.float32) / np.float32(PIXEL_MAX)


def model_input(image: Image.Image | np.ndarray, height: int, width: int) -> np.ndarray:
    """``(height, width, 3)`` float32 in [0, 1]: what every signature's ``images`` takes.

    ``image`` may also be ``(H, W, 3)`` uint8 RGB pixels, as a decoder gives them."""
    if isinstance(image, np.ndarray):
        if image.shape[:2] == (height, width):
            return scale(image)
        image = Image.fromarray(image)
    return scale(rgb_pixels(image, height, width))
