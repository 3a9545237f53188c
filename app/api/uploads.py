"""Read uploads within the limits and turn them into model inputs off the event loop.

An image arrives either as ``file`` parts of a multipart form (browsers, curl) or as the raw
request body with an image Content-Type (programs; no multipart parsing on the event loop,
about 0.09 ms per part). A raw body carries one image; several go as several requests, or as
several parts of one form. Both go through the same byte, pixel and decode checks.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.errors import invalid_parameter
from app.api.middleware.limits import MAX_FORM_FIELD_BYTES, MAX_FORM_FIELDS
from app.api.numbers import whole_number
from app.api.overload.decode_pool import DecodePool, DecodeWait, large_slot, late_detail
from app.core import tracing
from app.core.deadline import Deadline
from app.core.errors import DeadlineExceededError, PayloadTooLargeError, UnsupportedImageError
from app.core.imaging import (
    DecodeAdmission,
    DecodeLimits,
    decode_for_model,
    decodes_straight_at,
)
from app.settings import Settings
from contract.pixels import model_input


@dataclass(frozen=True)
class ModelInput:
    filename: str
    original_size: tuple[int, int]  # (width, height) after EXIF orientation
    pixels: np.ndarray  # (height, width, 3) float32 in [0, 1] at the model's input size


T = TypeVar("T")


def decode_limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        max_full_decode_pixels=settings.max_full_decode_pixels,
        max_jpeg_scans=settings.max_jpeg_scans,
    )


def prepare(
    data: bytes,
    filename: str,
    settings: Settings,
    height: int,
    width: int,
    admit: DecodeAdmission | None = None,
) -> ModelInput:
    """Decode and resize one upload (Pillow work: run it in a worker thread)."""
    limits = decode_limits(settings)
    decoded = decode_for_model(data, filename, limits, (width, height), admit)
    return ModelInput(filename, decoded.original_size, model_input(decoded.image, height, width))


# Body types read as one raw image; octet-stream is sniffed by the decoder like any upload.
RAW_IMAGE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/tiff",
    "application/octet-stream",
)
# Body types parsed as a form ("" = no body at all: answered "missing file", 422).
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded", "")
RAW_BODY_NAME = "body"  # the ``filename`` a raw body's prediction is reported under


@dataclass(frozen=True)
class RawImage:
    """A raw request body, already read within the byte limit."""

    filename: str
    data: bytes


Upload = UploadFile | RawImage


def upload_openapi(description: str, several: bool) -> dict[str, Any]:
    """The ``requestBody`` of an upload endpoint for its OpenAPI schema: a form of ``file``
    parts (one, or ``several``) or one image as the raw body."""
    binary = {"type": "string", "format": "binary"}
    file = {"type": "array", "items": binary} if several else binary
    form = {"type": "object", "properties": {"file": file}, "required": ["file"]}
    return {
        "required": True,
        "description": description,
        "content": {
            "multipart/form-data": {"schema": form},
            **{media_type: {"schema": binary} for media_type in RAW_IMAGE_TYPES},
        },
    }


def body_media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def request_uploads(request: Request, settings: Settings, several: bool) -> list[Upload]:
    """The images of a request: its raw image body or its ``file`` parts (one, unless the
    endpoint takes ``several``), read now, before inference starts watching the connection
    for a disconnect. A parsed form's spooled files are closed by ``InferenceRoute``."""
    media_type = body_media_type(request)
    if media_type in RAW_IMAGE_TYPES:
        with tracing.stage("read"):
            data = await read_raw_body(request, settings.max_upload_bytes)
        return [RawImage(RAW_BODY_NAME, data)]
    if media_type not in _FORM_TYPES:
        raise UnsupportedImageError(
            f"Content-Type {media_type} is not accepted: send multipart/form-data with `file` "
            f"parts, or one image as the body with one of {', '.join(RAW_IMAGE_TYPES)}"
        )
    with tracing.stage("read"):
        files = await _file_parts(request, settings)
    if not files:
        raise HTTPException(
            422,
            detail="missing `file` field: send multipart/form-data with `file` parts, "
            "or one image as the body with an image Content-Type",
        )
    if len(files) > 1 and not several:
        # refused rather than all but one being silently ignored
        detail = f"this endpoint takes exactly one file, got {len(files)} `file` parts"
        raise HTTPException(422, detail=detail)
    return files


async def _file_parts(request: Request, settings: Settings) -> list[Upload]:
    """The form's ``file`` parts. One file past the limit is still parsed, so that
    ``check_file_count`` names the limit; other (text) fields are few and small."""
    try:
        form = await request.form(
            max_files=settings.max_files_per_request + 1,
            max_fields=MAX_FORM_FIELDS,
            max_part_size=MAX_FORM_FIELD_BYTES,
        )
    except StarletteHTTPException:  # Starlette's 400 for a malformed form, the body limits'
        raise  # 408 and 413
    except Exception:  # the multipart parser's own errors on a broken stream
        raise HTTPException(400, detail="the multipart form could not be parsed") from None
    files: list[Upload] = []
    for value in form.getlist("file"):
        if not isinstance(value, UploadFile):
            message = "must be a file part (an UploadFile), not a text field"
            raise invalid_parameter("body", "file", value, message)
        files.append(value)
    return files


async def read_raw_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``max_bytes`` (by its declared
    Content-Length before any of it is read, else while it streams in), so no more than one
    image's worth is ever held."""
    declared = request.headers.get("content-length", "")
    if (whole_number(declared) or 0) > max_bytes:  # RequestBodyLimitMiddleware checks its form
        detail = f"{RAW_BODY_NAME}: {declared} bytes exceeds the {max_bytes} limit"
        raise PayloadTooLargeError(detail)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLargeError(
                f"{RAW_BODY_NAME}: more than {max_bytes} bytes, over the {max_bytes} limit"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def check_file_count(count: int, settings: Settings) -> None:
    """Refuse too many files before anything else is spent on the request."""
    if count > settings.max_files_per_request:
        raise PayloadTooLargeError(
            f"{count} files in one request; at most {settings.max_files_per_request} allowed"
        )


async def read_uploads(
    files: Sequence[Upload],
    settings: Settings,
    height: int,
    width: int,
    deadline: Deadline,
    pool: DecodePool,
) -> list[ModelInput]:
    """Read and prepare every part in one worker-thread call (``check_file_count`` first),
    on one of ``pool``'s threads, by ``deadline`` (``DecodePool.run_by``); small JPEGs
    already at the model's size are decoded on the event loop instead
    (``_straight_decodes``). The one entry of every encoded image into the input gate,
    ``app.core.imaging.decode_for_model``, through ``decode_uploads``."""

    def prepare_one(data: bytes, filename: str, admit: DecodeAdmission) -> ModelInput:
        return prepare(data, filename, settings, height, width, admit)

    straight = _straight_decodes(files, height, width)
    if straight is not None:
        return decode_uploads(straight, settings, deadline, pool.large, prepare_one)
    return await pool.run_by(
        deadline,
        lambda wait: decode_uploads(files, settings, deadline, pool.large, prepare_one, wait),
    )


# A form part up to this size is held in memory (Starlette spools parts over 1 MiB to disk);
# the event loop parses and decodes nothing larger (``_straight_decodes``).
IN_MEMORY_PART_BYTES = 64 * 1024


def _straight_decodes(files: Sequence[Upload], height: int, width: int) -> list[RawImage] | None:
    """The uploads, read, when each is a small JPEG already at the model's size: about
    25 us of C each (``decodes_straight_at``: no Pillow), less than the event loop pays to
    hand them to a thread and back (docs/history/performance-history.md). None for any other.

    Runs on the event loop, so each upload's size is checked against
    ``IN_MEMORY_PART_BYTES`` before a byte of it is parsed, and the parse is a walk of at
    most a fixed number of markers."""
    images = []
    for position, upload in enumerate(files):
        if isinstance(upload, RawImage):
            if len(upload.data) > IN_MEMORY_PART_BYTES:
                return None
            image = upload
        elif upload.size is not None and upload.size <= IN_MEMORY_PART_BYTES:
            upload.file.seek(0)
            image = RawImage(upload.filename or f"file {position + 1}", upload.file.read())
            upload.file.seek(0)  # the thread reads it again if this answers None
        else:
            return None
        if not decodes_straight_at(image.data, (width, height)):
            return None
        images.append(image)
    return images


def decode_uploads(
    files: Sequence[Upload],
    settings: Settings,
    deadline: Deadline,
    large: threading.BoundedSemaphore,
    decode: Callable[[bytes, str, DecodeAdmission], T],
    wait: DecodeWait | None = None,
) -> list[T]:
    """``decode(data, filename, admit)`` for each part, read (at most ``max_upload_bytes + 1``
    bytes, so an oversized one is detected without holding it all); one thread hop per
    request, not one per file. ``decode`` passes ``admit`` to ``decode_for_model``, which
    calls it before decoding: what decoding each file costs, read from its header (pixels,
    four times each pixel decoded at full size, and what reading its structure costs:
    ``decode_for_model``'s step 4), counts against ``max_request_pixels``, so one request's
    decoding work stays bounded however many files it carries, and a file over
    ``LARGE_IMAGE_COST`` waits for one of the ``large`` slots (``large_slot``). Nothing is
    decoded past ``deadline``.
    """
    decoded = []
    pixels = 0

    def admit(filename: str, claimed: int) -> AbstractContextManager[object]:
        nonlocal pixels
        pixels += claimed
        if pixels > settings.max_request_pixels:
            raise PayloadTooLargeError(
                f"{filename}: decoding the files up to this one costs {pixels} pixels "
                "together (a pixel decoded at full size counts 4, one of a large JPEG "
                f"decoded at reduced scale 1), over the {settings.max_request_pixels} pixel "
                "limit of one request"
            )
        return large_slot(large, claimed, deadline, wait)

    with tracing.stage("decode", files=len(files)):
        for position, upload in enumerate(files):
            if deadline.expired():  # queued too long for a thread: the work would be wasted
                raise DeadlineExceededError(late_detail(deadline))
            if isinstance(upload, RawImage):
                data, filename = upload.data, upload.filename
            else:
                data = upload.file.read(settings.max_upload_bytes + 1)
                filename = upload.filename or f"file {position + 1}"
            decoded.append(decode(data, filename, functools.partial(admit, filename)))
    return decoded
