"""A gallery cell's image as the gallery keeps it: a PNG we encode ourselves, and the digest
that names the cell.

Uploads reach here already decoded by the input gate (``app.core.imaging.decode_for_model``,
its byte, structure, pixel and per-request budgets applied), so nothing here parses an
uploaded file. The stored image is at most ``GALLERY_SIDE`` pixels on its longest side; its
digest (``store.content_digest``) is taken over those stored pixels, so the same cell
uploaded as another file, or re-uploaded from ``GET /gallery/{id}.png``, is the same item.

The gate hands over RGB (alpha composited over black, as the model sees it). A grey cell
(every pixel with R = G = B) is kept in mode ``L``: an offline cell stored as a grey PNG
(the quick models' are), uploaded again, must get the same digest as the cell itself.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.core.imaging import fit_within
from app.gallery.store import content_digest
from contract.pixels import model_input, to_rgb

GALLERY_SIDE = 256  # longest side of a stored cell, in pixels
STORED_MODES = ("L", "RGB", "RGBA")
# zlib level 1: a stored cell is small, and additions come in batches (docs/gallery.md).
PNG_LEVEL = 1


@dataclass(frozen=True)
class StoredImage:
    """One cell as the gallery keeps it: ``png`` and ``digest`` go to the store, ``image``
    (the same pixels) to the encoder."""

    png: bytes
    digest: bytes
    image: Image.Image


def stored_image(decoded: Image.Image | np.ndarray, png: bytes | None = None) -> StoredImage:
    """``decoded`` (a Pillow image, or ``(H, W, 3)`` uint8 RGB pixels as the gate's direct
    JPEG decode gives them) scaled to fit ``GALLERY_SIDE``, in mode L, RGB or RGBA (any
    other mode becomes RGB; RGB whose channels are all equal becomes L), with its digest.

    ``png``: the PNG ``decoded`` came from, kept as the stored file when the pixels needed
    no change (the offline index's cells, which are trusted); an upload is always encoded
    anew, so no chunk of the uploaded file is kept.
    """
    image = Image.fromarray(decoded) if isinstance(decoded, np.ndarray) else decoded
    changed = False
    if image.mode not in STORED_MODES:
        image = to_rgb(image)  # as contract.pixels does: 16-bit scaled, alpha over black
        changed = True
    size = fit_within(image.size, GALLERY_SIDE)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
        changed = True
    if image.mode == "RGB":
        pixels = np.asarray(image)
        if np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(
            pixels[..., 0], pixels[..., 2]
        ):
            image = Image.fromarray(np.ascontiguousarray(pixels[..., 0]))
            changed = True
    digest = content_digest(image.mode, image.size, image.tobytes())
    if png is None or changed:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=PNG_LEVEL)
        png = buffer.getvalue()
    return StoredImage(png, digest, image)


def offline_image(png: bytes) -> StoredImage:
    """A cell of the offline index (``gallery_images.bin``, written by training from
    MODEL_DIR: trusted), as the gallery stores it."""
    image = stored_pixels(png)
    # As the input gate would hand it over (RGB; grey stays grey: see the module text).
    return stored_image(image if image.mode in ("L", "RGB") else to_rgb(image), png)


def stored_pixels(png: bytes) -> Image.Image:
    """A trusted PNG's pixels (one the gallery wrote, or one of the offline index), for
    re-encoding. The file is in memory: the image holds nothing that needs closing."""
    image = Image.open(io.BytesIO(png), formats=("PNG",))
    image.load()
    return image


def model_batch(images: Sequence[Image.Image], height: int, width: int) -> np.ndarray:
    """``(n, height, width, 3)`` float32: what an encoder's signature takes (Pillow work:
    run it in a worker thread)."""
    return np.stack([model_input(image, height, width) for image in images])
