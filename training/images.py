"""Decode any image file into the RGB uint8 arrays every model here trains on.

The conversion itself is ``contract.pixels``, the same code the server runs on uploads.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from contract.pixels import rgb_pixels, to_rgb
from training.errors import DataError


class UnreadableImageError(DataError):
    """Raised with a message naming the file that could not be decoded."""


def decode_rgb(data: bytes, name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Return ``(H, W, 3)`` uint8 for any mode (L, LA, P, RGBA, I;16, CMYK...), EXIF
    orientation applied. ``size`` is ``(height, width)``; when given the image is resized
    with bilinear filtering."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened)
            if size is None:
                return np.asarray(to_rgb(image), dtype=np.uint8)
            return rgb_pixels(image, *size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(f"cannot read image {name}: {error}") from error
