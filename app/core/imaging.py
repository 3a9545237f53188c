"""Turn untrusted upload bytes into RGB images, with limits checked first.

Mode conversion and scaling to the model input are ``contract.pixels``, shared with training.

Every function here is plain (no HTTP, no TensorFlow) and raises ``ServiceError`` subclasses,
so the robustness tests and benchmarks can call them directly.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from app.core.errors import (
    BadImageError,
    PayloadTooLargeError,
    ServiceError,
    UnsupportedImageError,
)
from app.core.image_structure import (
    MAX_JPEG_SEGMENTS,
    JpegLayout,
    check_exif,
    check_structure,
    walk_jpeg,
)
from contract.pixels import to_rgb

SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
_JPEG_FORMATS = ("JPEG", "MPO")  # Pillow opens a multi-picture phone photo as MPO
_AXIS_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF: transposed or rotated by 90 degrees
# Start-of-frame markers ``_direct_jpeg_header`` takes: baseline, extended and progressive
# Huffman-coded DCT.
_BASELINE, _EXTENDED, _PROGRESSIVE = 0xC0, 0xC1, 0xC2
# The markers the event loop walks (``decodes_straight_at``) before giving up on the direct
# decode: Pillow, libjpeg and cameras write 6-20 before the first scan of a small JPEG.
_STRAIGHT_MAX_SEGMENTS = 32
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
    b"II+\x00": "TIFF",  # BigTIFF
    b"MM\x00+": "TIFF",
}

# Pillow's own bomb guard warns above MAX_IMAGE_PIXELS and refuses above twice that; we check
# the size ourselves before decoding, so an oversized image is always refused by us first.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def set_pixel_limit(max_pixels: int | None) -> int | None:
    """Keep Pillow's process-wide bomb guard in line with our own pixel limit; returns the
    previous limit, which the app puts back when it stops (tests and embedding programs
    share the process with other Pillow users)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    return previous


@dataclass(frozen=True)
class DecodeLimits:
    """What one upload may cost, all checked from its headers before any pixel is decoded.

    A baseline JPEG bound for a small model is decoded at 1/8 scale by libjpeg, so it may
    be as large as a phone photo (``max_pixels``). Every other image is decoded at full size
    first, a progressive JPEG included (each of its scans covers the whole image), so those
    get the smaller ``max_full_decode_pixels``; and a JPEG's scans are counted.
    """

    max_bytes: int
    max_pixels: int
    max_full_decode_pixels: int
    max_jpeg_scans: int


@dataclass(frozen=True)
class DecodedImage:
    # RGB, EXIF orientation applied: a Pillow image, or (height, width, 3) uint8 pixels for a
    # small JPEG decoded straight to an array (``decode_for_model`` with a target size)
    image: Image.Image | np.ndarray
    original_size: tuple[int, int]  # (width, height) of the full upload, orientation applied


@dataclass(frozen=True)
class _Header:
    """What the cost checks read from an image's header."""

    width: int
    height: int
    format: str
    progressive: bool


def decode_upload(data: bytes, filename: str, limits: DecodeLimits) -> Image.Image:
    """Return the upload's first frame, full size, as an RGB image (see ``decode_for_model``)."""
    image = decode_for_model(data, filename, limits, target_size=None).image
    assert isinstance(image, Image.Image)  # arrays come only with a target size
    return image


# Consulted with an image's decode cost (``decode_cost``) once its header is read, before it
# is decoded: raises to refuse it, else returns what is held while it decodes (e.g. a
# semaphore slot).
DecodeAdmission = Callable[[int], AbstractContextManager[object]]
# Per pixel, decoding at full size (PNG, GIF, WebP, BMP, TIFF, a progressive or small JPEG)
# costs up to four times what a baseline JPEG decoded at reduced scale does: the worst of
# each measured 36 ns (a 16-bit RGBA PNG, 4 MP in 143 ms) against 10 ns (colour noise as a
# 16 MP baseline JPEG in 162 ms), benchmarks/hostile_results.md.
FULL_DECODE_WEIGHT = 4


def decode_for_model(
    data: bytes,
    filename: str,
    limits: DecodeLimits,
    target_size: tuple[int, int] | None,
    admit: DecodeAdmission | None = None,
) -> DecodedImage:
    """Decode the upload's first frame as RGB, EXIF orientation applied: the input gate
    every encoded image passes (multipart parts, raw bodies and v2 BYTES elements all reach
    it through ``app.api.uploads.read_uploads``). In this order, each step bounded before
    the next one starts:

    1. byte cap: ``limits.max_bytes`` (413), so nothing below reads more than that;
    2. structure walk: ``image_structure.check_structure``, a fixed budget of segments,
       chunks, sub-blocks, strips and IFD entries, and the JPEG scans (413 naming the budget,
       400 for a structure it cannot walk), before Pillow or libjpeg parses anything; once
       Pillow has read a header (bounded by this walk), the EXIF block it found is bounded
       the same way (``check_exif``) before its entries are parsed;
    3. header: width and height from the header (libjpeg's in C for a small JPEG, else
       Pillow's, its walk now bounded by step 2) against the pixel limits (413);
    4. admission: ``admit(decode cost)`` weighs the image against the caller's budget (the
       request's pixels, a large-decode slot) and may refuse it. The cost is in pixels of a
       JPEG decoded at reduced scale: its width x height for such a JPEG, else
       ``FULL_DECODE_WEIGHT`` times its width x height, plus what reading a file near the
       structure budgets costs beyond its pixels (0 for an ordinary file), so many such
       files in one request add up like large images do;
    5. decode, its cost bounded by steps 2-3.

    With ``target_size=(width, height)`` a large JPEG is decoded at a reduced scale (1/2 to
    1/8, never smaller than the target) by libjpeg itself: a 12-megapixel photo bound for a
    64x64 model then decodes about ten times faster. A small JPEG may come back as an array
    (``_direct_jpeg_header``). Raises 415 for anything that is not a supported image and 400
    for a truncated or corrupt one.
    """
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(
            f"{filename}: {len(data)} bytes exceeds the {limits.max_bytes} limit"
        )
    if not data:
        raise BadImageError(f"{filename}: the file is empty")
    structure = check_structure(data, filename, limits.max_jpeg_scans)
    header = None
    if structure.jpeg is not None and target_size is not None:
        header = _direct_jpeg_header(data, structure.jpeg, target_size)
    if header is None:
        return _decode_with_pillow(
            data, filename, limits, target_size, admit, structure.cost_pixels
        )
    cost = _check_cost(header, filename, limits, reduced_jpeg=False)  # decoded at full size
    with _admitted(admit, cost, structure.cost_pixels):
        try:
            # strict: libjpeg's warnings are errors here; Pillow decides what they mean
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        except ValueError:
            return _decode_with_pillow(data, filename, limits, target_size, admit=None)
    return DecodedImage(pixels, (header.width, header.height))


def _decode_with_pillow(
    data: bytes,
    filename: str,
    limits: DecodeLimits,
    target_size: tuple[int, int] | None,
    admit: DecodeAdmission | None,
    structure_cost: int = 0,
) -> DecodedImage:
    """Open, check and decode ``data`` with Pillow; ``structure_cost``: what the structure
    walk found reading its structure costs, in pixels (counted with its pixels by ``admit``)."""
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
        raise _too_many_pixels(filename, limits.max_pixels, error) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"{filename}: cannot read image header: {error}") from error
    with image:
        exif = _exif_block(image)
        if exif:
            structure_cost += check_exif(exif, filename)
        header = _Header(*image.size, image.format or "", bool(image.info.get("progressive")))
        cost = _check_cost(header, filename, limits, reduced_jpeg=target_size is not None)
        with _admitted(admit, cost, structure_cost):
            return _decode(image, filename, limits, target_size)


def _exif_block(image: Image.Image) -> bytes | None:
    """The EXIF block ``image.getexif()`` would parse (a TIFF's own IFD aside, which the
    structure walk bounded): its ``exif`` info, or a PNG's hex raw profile, decoded as
    Pillow decodes it (at most 1 MB of text)."""
    exif = image.info.get("exif")
    if isinstance(exif, bytes):
        return exif
    profile = image.info.get("Raw profile type exif")
    if isinstance(profile, str):
        with contextlib.suppress(ValueError):  # Pillow reports it when it reads it
            return bytes.fromhex("".join(profile.split("\n")[3:]))
    return None


def _admitted(
    admit: DecodeAdmission | None, pixel_cost: int, structure_cost: int
) -> AbstractContextManager[object]:
    """``admit`` weighs decoding the pixels and reading the structure (whose cost is in
    pixels decoded at full size) together, in ``decode_for_model``'s unit."""
    if admit is None:
        return contextlib.nullcontext()
    return admit(pixel_cost + FULL_DECODE_WEIGHT * structure_cost)


def _decode(
    image: Image.Image, filename: str, limits: DecodeLimits, target_size: tuple[int, int] | None
) -> DecodedImage:
    """The opened ``image``'s first frame as RGB (see ``decode_for_model``)."""
    width, height = image.size
    try:
        image.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        turned = orientation in _AXIS_SWAPPING_ORIENTATIONS
        original_size = (height, width) if turned else (width, height)
        if target_size is not None and image.format in _JPEG_FORMATS:
            side = max(target_size)  # square: the orientation may still swap the axes
            image.draft(image.mode, (side, side))
        image.load()
        if orientation != 1:  # skip exif_transpose's copy of an upright image
            image = ImageOps.exif_transpose(image)
        return DecodedImage(to_rgb(image), original_size)
    except Image.DecompressionBombError as error:
        raise _too_many_pixels(filename, limits.max_pixels, error) from error
    except (OSError, SyntaxError, ValueError, EOFError, ZeroDivisionError) as error:
        raise BadImageError(f"{filename}: truncated or corrupt image: {error}") from error


def _direct_jpeg_header(
    data: bytes, layout: JpegLayout, target_size: tuple[int, int]
) -> _Header | None:
    """The header of a JPEG that simplejpeg decodes straight to an array, else None;
    ``layout`` is what the structure walk found.

    Those are the JPEGs Pillow would decode at full size (under twice the target on a side),
    Huffman-coded, in 8-bit YCbCr or grey, with no APP1 segment (where an EXIF or XMP
    orientation lives). Both use libjpeg-turbo with the same settings (accurate DCT, smooth
    upsampling), so the pixels are the same, but Pillow parses the header in Python: about
    0.2 ms of the interpreter lock per 64x64 upload, against 0.03 ms here.
    """
    if layout.has_app1 or layout.frame not in (_BASELINE, _EXTENDED, _PROGRESSIVE):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # Pillow names what is wrong with it
    side = max(target_size)
    if colorspace not in ("YCbCr", "Gray") or min(width // side, height // side) >= 2:
        return None  # the latter Pillow decodes at reduced scale (its draft() rule)
    return _Header(width, height, "JPEG", layout.frame == _PROGRESSIVE)


def decodes_straight_at(data: bytes, size: tuple[int, int]) -> bool:
    """Whether ``decode_for_model`` decodes ``data`` straight to an array of exactly
    ``size`` (width, height) in one pass: a small sequential JPEG already at the model's
    input size, about 25 us of libjpeg-turbo and nothing else (no Pillow, no resize; a
    progressive one would cost that per scan).

    Cheap enough for the event loop whatever ``data`` holds: its markers are walked up to
    the first scan within ``_STRAIGHT_MAX_SEGMENTS`` steps (and the padding budget), and any
    file over a budget answers False, for the decode thread to refuse with its reason. The
    caller caps the bytes first (``app.api.uploads.IN_MEMORY_PART_BYTES``), which bounds
    libjpeg's header read.
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return False
    try:
        layout = walk_jpeg(data, "", _STRAIGHT_MAX_SEGMENTS, max_scans=0)
    except ServiceError:
        return False
    header = _direct_jpeg_header(data, layout, size)
    return header is not None and not header.progressive and (header.width, header.height) == size


def _check_cost(header: _Header, filename: str, limits: DecodeLimits, reduced_jpeg: bool) -> int:
    """Refuse (413) an image whose decode would cost more than the limits allow, else return
    what decoding it costs in pixels of a JPEG decoded at reduced scale (``admit``'s unit);
    ``reduced_jpeg``: a baseline JPEG will be decoded at reduced scale."""
    width, height = header.width, header.height
    if width * height > limits.max_pixels:
        raise _too_many_pixels(filename, limits.max_pixels, f"{width}x{height}")
    is_jpeg = header.format in _JPEG_FORMATS
    progressive = header.progressive
    reduced = reduced_jpeg and is_jpeg and not progressive
    if not reduced and width * height > limits.max_full_decode_pixels:
        kind = "progressive JPEG" if is_jpeg and progressive else header.format
        raise _too_many_pixels(
            filename,
            limits.max_full_decode_pixels,
            f"{width}x{height}; a {kind} is decoded at full size",
        )
    return width * height * (1 if reduced else FULL_DECODE_WEIGHT)


def count_jpeg_scans(data: bytes, stop_after: int) -> int:
    """Count the start-of-scan markers of a JPEG by walking its segments (the structure
    walk's ``walk_jpeg``), without decoding; stops counting at ``stop_after + 1``.

    A progressive JPEG may hold any number of scans and libjpeg decodes every one over the
    whole image, so the decode cost is pixels x scans: a 133 KB file with 2,000 empty scans
    costs seconds of CPU.
    """
    return walk_jpeg(data, "", MAX_JPEG_SEGMENTS, stop_after).scans


def _claimed_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for start, name in _SIGNATURES.items() if data.startswith(start)), None)


def _too_many_pixels(filename: str, max_pixels: int, cause: object) -> PayloadTooLargeError:
    """One message whether our check or Pillow's own bomb guard caught it first."""
    return PayloadTooLargeError(f"{filename}: image exceeds the {max_pixels} pixel limit ({cause})")


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled down, aspect ratio kept, so that neither side exceeds ``max_side``."""
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_png(pixels: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """Encode ``(H, W, 3)`` pixels in ``[0, 1]`` as PNG, resized when ``size=(width, height)``.

    zlib level 1: at 1024x1024 it encodes in a quarter of the time of Pillow's default level
    (measured 0.14 s against 0.59 s) for a file about a fifth larger.
    """
    array = np.clip(np.rint(np.asarray(pixels) * 255.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(array)
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
