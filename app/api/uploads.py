"""Read multipart uploads within the limits and turn them into model inputs off the event loop."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import HTTPException, Request, UploadFile

from app.core import tracing
from app.core.deadline import Deadline
from app.core.errors import DeadlineExceededError, PayloadTooLargeError
from app.core.imaging import DecodeLimits, claimed_pixels, decode_for_model
from app.settings import Settings
from contract.pixels import model_input


@dataclass(frozen=True)
class ModelInput:
    filename: str
    original_size: tuple[int, int]  # (width, height) after EXIF orientation
    pixels: np.ndarray  # (height, width, 3) float32 in [0, 1] at the model's input size


def decode_limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        max_full_decode_pixels=settings.max_full_decode_pixels,
        max_jpeg_scans=settings.max_jpeg_scans,
    )


def prepare(data: bytes, filename: str, settings: Settings, height: int, width: int) -> ModelInput:
    """Decode and resize one upload (Pillow work: run it in a worker thread)."""
    decoded = decode_for_model(data, filename, decode_limits(settings), (width, height))
    return ModelInput(filename, decoded.original_size, model_input(decoded.image, height, width))


async def require_one_file(request: Request) -> None:
    """Dependency of the one-image endpoints: several ``file`` parts are refused (422) instead
    of all but one being silently ignored. FastAPI has already parsed and cached the form."""
    count = len((await request.form()).getlist("file"))
    if count > 1:
        raise HTTPException(
            422, detail=f"this endpoint takes exactly one file, got {count} `file` parts"
        )


def check_file_count(count: int, settings: Settings) -> None:
    """Refuse too many files before anything else is spent on the request."""
    if count > settings.max_files_per_request:
        raise PayloadTooLargeError(
            f"{count} files in one request; at most {settings.max_files_per_request} allowed"
        )


async def read_uploads(
    files: list[UploadFile],
    settings: Settings,
    height: int,
    width: int,
    deadline: Deadline,
    threads: CapacityLimiter,
) -> list[ModelInput]:
    """Read and prepare every part in one worker-thread call (``check_file_count`` first),
    on one of ``threads``.

    Waiting for a free worker thread ends at ``deadline`` (``DeadlineExceededError``), and a
    thread that starts after it decodes nothing.
    """
    work = functools.partial(_read_and_prepare_all, files, settings, height, width, deadline)
    try:
        async with asyncio.timeout(deadline.remaining()):
            return await to_thread.run_sync(work, limiter=threads)
    except TimeoutError:
        raise DeadlineExceededError(_late_detail(deadline)) from None


def _late_detail(deadline: Deadline) -> str:
    return (
        f"overloaded: no decoding thread was free within the request's {deadline.timeout_s:g} s"
        " deadline; retry later"
    )


def _read_and_prepare_all(
    files: list[UploadFile], settings: Settings, height: int, width: int, deadline: Deadline
) -> list[ModelInput]:
    """Read each part (at most ``max_upload_bytes + 1`` bytes, so an oversized one is detected
    without holding it all) and prepare it; one thread hop per request, not one per file.

    The pixels every file claims in its header count against ``max_request_pixels`` before
    that file is decoded, so one request's decoding work stays bounded however many files
    it carries.
    """
    inputs = []
    pixels = 0
    with tracing.stage("decode", files=len(files)):
        for position, upload in enumerate(files):
            if deadline.expired():  # queued too long for a thread: the work would be wasted
                raise DeadlineExceededError(_late_detail(deadline))
            data = upload.file.read(settings.max_upload_bytes + 1)
            filename = upload.filename or f"file {position + 1}"
            pixels += claimed_pixels(data) if len(data) <= settings.max_upload_bytes else 0
            if pixels > settings.max_request_pixels:
                raise PayloadTooLargeError(
                    f"{filename}: the files up to this one hold {pixels} pixels together, over "
                    f"the {settings.max_request_pixels} pixel limit of one request"
                )
            inputs.append(prepare(data, filename, settings, height, width))
    return inputs
