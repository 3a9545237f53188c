"""The decode pool on its own: a request still waiting at its deadline is overload (503 with
``Retry-After``), one whose decode started in time but ran past it is not; a large image
holds one of the few large slots, and waits for it no longer than its deadline. (Through the
upload path: tests/app/api/test_uploads.py.)"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.api.overload.decode_pool import (
    LARGE_IMAGE_COST,
    DecodeOverranError,
    DecodePool,
    DecodeWait,
    large_slot,
)
from app.core.deadline import Deadline
from app.core.errors import DeadlineExceededError

pytestmark = pytest.mark.anyio

# A blocked thread is let go after this at the latest, so a failing test ends.
RELEASE_S = 30


async def test_waiting_for_a_thread_and_overrunning_the_deadline_answer_differently() -> None:
    pool = DecodePool(ThreadPoolExecutor(1), threading.BoundedSemaphore(1))
    release = threading.Event()
    try:
        with pytest.raises(DecodeOverranError, match="still running") as overran:
            await pool.run_by(Deadline.after(0.2), lambda wait: release.wait(RELEASE_S))
        assert overran.value.retry_after_s is None
        # the one thread still works on that: the next request waits for it, then is shed
        with pytest.raises(DeadlineExceededError, match="no decoding thread was free") as late:
            await pool.run_by(Deadline.after(0.2), lambda wait: "never started")
        assert not isinstance(late.value, DecodeOverranError)
        assert late.value.retry_after_s == 1
    finally:
        release.set()
        pool.close()


async def test_work_in_time_gets_its_answer_and_is_told_it_started() -> None:
    pool = DecodePool(ThreadPoolExecutor(1), threading.BoundedSemaphore(1))
    try:
        seen: list[bool] = []

        def work(wait: DecodeWait) -> str:
            seen.append(wait.waiting)
            return "decoded"

        assert await pool.run_by(Deadline.after(RELEASE_S), work) == "decoded"
        assert seen == [False]
    finally:
        pool.close()


def test_only_a_large_image_takes_a_large_slot_and_gives_it_back() -> None:
    large = threading.BoundedSemaphore(1)
    wait = DecodeWait(waiting=False)
    with large_slot(large, LARGE_IMAGE_COST, Deadline.after(RELEASE_S), wait):
        assert large.acquire(blocking=False)  # a small image: the slot stayed free
        large.release()
    with large_slot(large, LARGE_IMAGE_COST + 1, Deadline.after(RELEASE_S), wait):
        assert not large.acquire(blocking=False)
        assert not wait.waiting
    assert large.acquire(blocking=False)  # given back; now another request holds it
    with pytest.raises(DeadlineExceededError, match="no decoding thread was free"):
        large_slot(large, LARGE_IMAGE_COST + 1, Deadline.after(0.1), wait)
    assert wait.waiting  # the deadline found it waiting for the slot


async def test_a_cancelled_caller_never_runs_work_that_has_not_started() -> None:
    pool = DecodePool(ThreadPoolExecutor(1), threading.BoundedSemaphore(1))
    release = threading.Event()
    ran: list[str] = []
    try:
        busy = asyncio.ensure_future(pool.run(lambda: release.wait(RELEASE_S)))
        queued = asyncio.ensure_future(pool.run(lambda: ran.append("queued")))
        for _ in range(3):
            await asyncio.sleep(0)  # both reach the pool: one runs, one waits in its queue
        queued.cancel()
        release.set()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await queued
        pool.threads.submit(lambda: None).result(RELEASE_S)  # the thread went past it
        assert ran == []
    finally:
        release.set()
        pool.close()
