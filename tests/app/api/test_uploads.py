"""Decoding uploads on the decode pool: small uploads decode side by side, large ones wait
for one of the few large-decode slots, and never past the request's deadline."""

from __future__ import annotations

import asyncio
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from starlette.datastructures import UploadFile

from app.api.uploads import LARGE_IMAGE_PIXELS, DecodePool, RawImage, Upload, read_uploads
from app.core.deadline import Deadline
from app.core.errors import DeadlineExceededError
from app.settings import Settings


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


SMALL = RawImage("small.png", png(64, 64))
LARGE = RawImage("large.png", png(1100, 1000))  # 1.1 MP: over LARGE_IMAGE_PIXELS


def test_the_defaults_decode_several_at_once_and_one_large_image_per_cpu() -> None:
    settings = Settings()
    assert settings.decode_threads == 8
    assert 1 <= settings.large_decode_limit <= 1024
    assert Settings(decode_threads=3, large_decodes=2).large_decode_limit == 2
    assert 1100 * 1000 > LARGE_IMAGE_PIXELS > 64 * 64


def decode(files: list[Upload], pool: DecodePool, timeout_s: float) -> list:
    return asyncio.run(read_uploads(files, Settings(), 8, 8, Deadline.after(timeout_s), pool))


def test_a_large_upload_waits_for_a_large_slot_until_the_deadline() -> None:
    large = threading.BoundedSemaphore(1)
    pool = DecodePool(ThreadPoolExecutor(4), large)
    large.acquire()  # another request is decoding a large image
    with pytest.raises(DeadlineExceededError):
        decode([LARGE], pool, timeout_s=0.3)
    (item,) = decode([SMALL], pool, timeout_s=0.3)  # small uploads need no large slot
    assert item.pixels.shape == (8, 8, 3)
    large.release()
    (item,) = decode([LARGE], pool, timeout_s=5)
    assert item.original_size == (1100, 1000)
    assert np.allclose(item.pixels[0, 0], np.array([200, 40, 40]) / 255, atol=1 / 255)
    assert large.acquire(blocking=False)  # the slot was given back


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_small_jpegs_at_the_model_size_decode_without_a_thread() -> None:
    pool = DecodePool(ThreadPoolExecutor(1), threading.BoundedSemaphore(1))
    pool.close()  # any hand-over to a thread now fails
    data = jpeg(8, 8)
    part = UploadFile(io.BytesIO(data), size=len(data), filename="part.jpg")
    raw, in_form = decode([RawImage("small.jpg", data), part], pool, timeout_s=5)
    assert raw.pixels.shape == in_form.pixels.shape == (8, 8, 3)
    assert in_form.filename == "part.jpg"
    with pytest.raises(RuntimeError, match="shutdown"):
        decode([RawImage("wide.jpg", jpeg(12, 8))], pool, timeout_s=5)  # needs a resize
    with pytest.raises(RuntimeError, match="shutdown"):
        decode([SMALL], pool, timeout_s=5)  # a PNG goes through Pillow
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", progressive=True)
    with pytest.raises(RuntimeError, match="shutdown"):
        decode([RawImage("progressive.jpg", buffer.getvalue())], pool, timeout_s=5)
