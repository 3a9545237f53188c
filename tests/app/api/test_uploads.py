"""Decoding uploads on the decode pool: small uploads decode side by side, large ones wait
for one of the few large-decode slots, and never past the request's deadline."""

from __future__ import annotations

import asyncio
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.datastructures import UploadFile

from app.api import uploads
from app.api.overload.decode_pool import LARGE_IMAGE_COST, DecodeOverranError, DecodePool
from app.api.uploads import (
    IN_MEMORY_PART_BYTES,
    ModelInput,
    RawImage,
    Upload,
    read_uploads,
)
from app.core.deadline import Deadline
from app.core.errors import DeadlineExceededError, PayloadTooLargeError
from app.core.imaging import (
    FULL_DECODE_WEIGHT,
    DecodeAdmission,
    decode_for_model,
    decodes_straight_at,
)
from app.settings import Settings
from benchmarks.hostile_inputs import jpeg_segment_flood, png_text_flood


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


SMALL = RawImage("small.png", png(64, 64))
LARGE = RawImage("large.png", png(1100, 1000))  # 1.1 MP at full size: over LARGE_IMAGE_COST


def test_the_defaults_decode_several_at_once_and_one_large_image_per_cpu() -> None:
    settings = Settings()
    assert settings.decode_threads == 8
    assert 1 <= settings.large_decode_limit <= 1024
    assert Settings(decode_threads=3, large_decodes=2).large_decode_limit == 2
    assert FULL_DECODE_WEIGHT * 1100 * 1000 > LARGE_IMAGE_COST > FULL_DECODE_WEIGHT * 64 * 64


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


def test_the_event_loop_parses_no_upload_over_the_in_memory_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walked: list[int] = []

    def recording(data: bytes, size: tuple[int, int]) -> bool:
        walked.append(len(data))
        return decodes_straight_at(data, size)

    monkeypatch.setattr(uploads, "decodes_straight_at", recording)
    over = jpeg_segment_flood(IN_MEMORY_PART_BYTES // 4)  # a real 64x64 JPEG behind them
    assert len(over) > IN_MEMORY_PART_BYTES
    part = UploadFile(io.BytesIO(over), size=len(over), filename="part.jpg")
    assert uploads._straight_decodes([RawImage("body", over)], 64, 64) is None
    assert uploads._straight_decodes([part], 64, 64) is None
    assert walked == []
    small = jpeg(64, 64)
    assert uploads._straight_decodes([RawImage("body", small)], 64, 64) is not None
    assert walked == [len(small)]


def test_a_decode_still_running_at_the_deadline_is_not_called_overload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting for a thread past the deadline is overload (503, Retry-After); a decode that
    started in time and ran past it is named as such, with no invitation to retry."""
    release = threading.Event()
    real_prepare = uploads.prepare

    def slow_prepare(*args: Any, **kwargs: Any) -> ModelInput:
        release.wait(5)
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(uploads, "prepare", slow_prepare)
    pool = DecodePool(ThreadPoolExecutor(1), threading.BoundedSemaphore(1))
    try:
        with pytest.raises(DecodeOverranError, match="still running") as overran:
            decode([SMALL], pool, timeout_s=0.2)
        assert overran.value.retry_after_s is None
        assert "no decoding thread was free" not in overran.value.detail
        # the one thread is still busy with that decode: the next request waits for it
        with pytest.raises(DeadlineExceededError, match="no decoding thread was free") as late:
            decode([SMALL], pool, timeout_s=0.2)
        assert not isinstance(late.value, DecodeOverranError)
        assert late.value.retry_after_s == 1
    finally:
        release.set()
        pool.close()


def test_files_near_the_structure_budgets_add_up_against_the_request_budget() -> None:
    """Each PNG below is within every per-file budget (32 compressed text chunks of 1 MB)
    and 64x64, but costs about as much to read as 2 MP cost to decode: a request cannot
    send 64 of them."""
    near_budget = RawImage("text.png", png_text_flood(32))
    pool = DecodePool(ThreadPoolExecutor(1), threading.BoundedSemaphore(8))
    try:
        (one,) = decode([near_budget], pool, timeout_s=30)
        assert one.original_size == (64, 64)
        with pytest.raises(PayloadTooLargeError, match="pixel limit of one request"):
            decode([near_budget] * 64, pool, timeout_s=30)
        assert len(decode([SMALL] * 64, pool, timeout_s=30)) == 64  # ordinary files: pixels
    finally:
        pool.close()


def test_any_per_file_decode_shares_the_request_budget_and_the_large_slots() -> None:
    """``decode_uploads`` with a decode of its own (the gallery's, say) counts each file
    against the request's pixel budget and holds a large slot around a large one."""
    limits = uploads.decode_limits(Settings())
    large = threading.BoundedSemaphore(1)
    held: list[bool] = []

    def size_of(data: bytes, filename: str, admit: DecodeAdmission) -> tuple[int, int]:
        def watched(cost: int) -> AbstractContextManager[object]:
            slot = admit(cost)
            free = large.acquire(blocking=False)
            if free:
                large.release()
            held.append(not free)  # whether this file's decode holds the large slot
            return slot

        return decode_for_model(data, filename, limits, (8, 8), watched).original_size

    def decode_all(files: list[Upload], timeout_s: float) -> list[tuple[int, int]]:
        return uploads.decode_uploads(files, Settings(), Deadline.after(timeout_s), large, size_of)

    assert decode_all([SMALL, LARGE], timeout_s=5) == [(64, 64), (1100, 1000)]
    assert held == [False, True]
    assert large.acquire(blocking=False)  # given back; now another request holds it
    with pytest.raises(DeadlineExceededError):
        decode_all([LARGE], timeout_s=0.2)
    large.release()
    near_budget = RawImage("text.png", png_text_flood(32))
    with pytest.raises(PayloadTooLargeError, match="pixel limit of one request"):
        decode_all([near_budget] * 64, timeout_s=30)
