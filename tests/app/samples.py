"""Synthetic upload bytes for the app tests."""

from __future__ import annotations

import io

from PIL import Image

SIGNS_EXAMPLE = "0_IMG_5864.jpg"


def gradient_image(size: tuple[int, int] = (64, 64), mode: str = "RGB") -> Image.Image:
    """A colour gradient, so that resizing, rotation and channel order are all visible."""
    width, height = size
    ramp = Image.linear_gradient("L").resize((width, height))
    image = Image.merge(
        "RGB", (ramp, ramp.rotate(90), ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    )
    return image.convert(mode)


def image_bytes(
    image_format: str = "PNG", size: tuple[int, int] = (64, 64), mode: str = "RGB", **save: object
) -> bytes:
    buffer = io.BytesIO()
    gradient_image(size, mode).save(buffer, format=image_format, **save)
    return buffer.getvalue()
