"""Turn untrusted upload bytes into the RGB arrays the models expect, with limits checked first.

Every function here is plain (no HTTP, no TensorFlow) and raises ``ServiceError`` subclasses,
so the robustness tests and benchmarks can call them directly.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from app.core.errors import BadImageError, PayloadTooLargeError, UnsupportedImageError

SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
_AXIS_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF: transposed or rotated by 90 degrees
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# How each supported format begins: a file that starts like one but cannot be opened is a
# damaged image (400), not an unsupported one (415).
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}

# Pillow's own bomb guard warns above MAX_IMAGE_PIXELS and refuses above twice that; we check
# the size ourselves before decoding, so an oversized image is always refused by us first.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def set_pixel_limit(max_pixels: int) -> None:
    """Keep Pillow's process-wide bomb guard in line with our own pixel limit."""
    Image.MAX_IMAGE_PIXELS = max_pixels


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    original_size: tuple[int, int]  # (width, height) of the full upload, orientation applied


def decode_upload(data: bytes, filename: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """Return the upload's first frame, full size, as an RGB image (see ``decode_for_model``)."""
    return decode_for_model(data, filename, max_bytes, max_pixels, target_size=None).image


def decode_for_model(
    data: bytes,
    filename: str,
    max_bytes: int,
    max_pixels: int,
    target_size: tuple[int, int] | None,
) -> DecodedImage:
    """Decode the upload's first frame as RGB, EXIF orientation applied.

    With ``target_size=(width, height)`` a large JPEG is decoded at a reduced scale (1/2 to
    1/8, never smaller than the target) by libjpeg itself: a 12-megapixel photo bound for a
    64x64 model then decodes about ten times faster.

    Raises 413 for too many bytes or pixels (checked from the header, before decoding),
    415 for anything that is not a supported image and 400 for a truncated or corrupt one.
    """
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"{filename}: {len(data)} bytes exceeds the {max_bytes} limit")
    if not data:
        raise BadImageError(f"{filename}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError as error:
        claimed = _claimed_format(data)
        if claimed is not None:
            raise BadImageError(
                f"{filename}: starts like a {claimed} file but its header cannot be read "
                "(truncated or corrupt)"
            ) from error
        supported = ", ".join(SUPPORTED_FORMATS)
        raise UnsupportedImageError(
            f"{filename}: not an image in a supported format ({supported})"
        ) from error
    except Image.DecompressionBombError as error:
        raise _too_many_pixels(filename, max_pixels, error) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"{filename}: cannot read image header: {error}") from error
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise _too_many_pixels(filename, max_pixels, f"{width}x{height}")
        try:
            image.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            turned = orientation in _AXIS_SWAPPING_ORIENTATIONS
            original_size = (height, width) if turned else (width, height)
            if target_size is not None and image.format == "JPEG":
                side = max(target_size)  # square: the orientation may still swap the axes
                image.draft(image.mode, (side, side))
            image.load()
            if orientation != 1:  # skip exif_transpose's copy of an upright image
                image = ImageOps.exif_transpose(image)
            return DecodedImage(_to_rgb(image), original_size)
        except Image.DecompressionBombError as error:
            raise _too_many_pixels(filename, max_pixels, error) from error
        except (OSError, SyntaxError, ValueError, EOFError, ZeroDivisionError) as error:
            raise BadImageError(f"{filename}: truncated or corrupt image: {error}") from error


def _claimed_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for start, name in _SIGNATURES.items() if data.startswith(start)), None)


def _too_many_pixels(filename: str, max_pixels: int, cause: object) -> PayloadTooLargeError:
    """One message whether our check or Pillow's own bomb guard caught it first."""
    return PayloadTooLargeError(f"{filename}: image exceeds the {max_pixels} pixel limit ({cause})")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to RGB the way training does: 16-bit scaled down, alpha over black."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        scale = 1.0 if image.mode == "F" else 257.0
        array = np.asarray(image, dtype=np.float64) / scale
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    has_transparency = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_transparency:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def to_model_input(image: Image.Image, height: int, width: int) -> np.ndarray:
    """``(height, width, 3)`` float32 in ``[0, 1]``, resized bilinearly as in training."""
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def to_png(pixels: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """Encode ``(H, W, 3)`` pixels in ``[0, 1]`` as PNG, resized when ``size=(width, height)``."""
    array = np.clip(np.rint(np.asarray(pixels) * 255.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(array)
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
