"""Decode any image file into the RGB uint8 arrays every model here trains on."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from training.errors import DataError


class UnreadableImageError(DataError):
    """Raised with a message naming the file that could not be decoded."""


def decode_rgb(data: bytes, name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Return ``(H, W, 3)`` uint8 for any mode (L, LA, P, RGBA, I;16, CMYK...).

    ``size`` is ``(height, width)``; when given the image is resized with bilinear filtering.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64) / 257.0  # 16-bit range -> 8-bit
                image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
            has_alpha = image.mode in ("RGBA", "LA", "PA")
            if has_alpha or (image.mode == "P" and "transparency" in image.info):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (0, 0, 0, 255))
                image = Image.alpha_composite(background, image)
            image = image.convert("RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(f"cannot read image {name}: {error}") from error
