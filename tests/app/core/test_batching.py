"""The micro-batcher without HTTP or TensorFlow: a recording numpy function stands in."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from app.core.batching import BatcherClosedError, MicroBatcher
from app.core.deadline import Deadline
from app.core.errors import DeadlineExceededError, QueueFullError

pytestmark = pytest.mark.anyio


class Recorder:
    """Doubles its input and remembers each batch size (optionally waiting for a gate)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batch_sizes: list[int] = []
        self.gate = gate

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(timeout=10)
        self.batch_sizes.append(len(batch))
        return batch * 2


def examples(count: int, rows: int = 1) -> list[np.ndarray]:
    """``count`` requests of ``rows`` images each; request ``i``'s pixels are all ``i``."""
    return [np.full((rows, 2, 2), value, np.float32) for value in range(count)]


@pytest.mark.parametrize(
    ("requests", "rows", "batch_size"),
    [(5, 1, 5), (2, 3, 6)],
    ids=["one image each", "several images each"],
)
async def test_concurrent_requests_share_one_call_and_get_their_own_rows(
    requests: int, rows: int, batch_size: int
) -> None:
    recorder = Recorder()
    batcher = MicroBatcher("test", max_size=8, max_wait_s=0.2, max_queued=64)
    try:
        pending = (batcher.submit(recorder, x) for x in examples(requests, rows))
        results = await asyncio.gather(*pending)
    finally:
        batcher.close()
    assert recorder.batch_sizes == [batch_size]
    for value, result in enumerate(results):
        assert np.array_equal(result, np.full((rows, 2, 2), 2 * value))


async def test_a_request_larger_than_max_size_is_cut_into_chunks_in_order() -> None:
    recorder = Recorder()
    batcher = MicroBatcher("test", max_size=4, max_wait_s=0.2, max_queued=64)
    request = np.arange(10, dtype=np.float32).reshape(10, 1)
    try:
        result = await batcher.submit(recorder, request)
    finally:
        batcher.close()
    assert recorder.batch_sizes == [4, 4, 2]
    assert np.array_equal(result, request * 2)


async def test_a_request_that_would_overflow_a_batch_waits_for_the_next_one() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher("test", max_size=4, max_wait_s=0.2, max_queued=64)
    try:
        tasks = [asyncio.ensure_future(batcher.submit(recorder, x)) for x in examples(3, rows=3)]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks)
    finally:
        batcher.close()
    assert recorder.batch_sizes == [3, 3, 3]
    for value, result in enumerate(results):
        assert np.array_equal(result, np.full((3, 2, 2), 2 * value))


async def test_a_batch_starts_as_soon_as_it_is_full() -> None:
    """The worker collecting a batch sleeps until it is due, but a full batch wakes it."""
    recorder = Recorder()
    batcher = MicroBatcher("test", max_size=4, max_wait_s=30, max_queued=64)
    try:
        first = asyncio.ensure_future(batcher.submit(recorder, examples(1)[0]))
        await asyncio.sleep(0.05)  # the worker has found it and is collecting
        rest = [batcher.submit(recorder, x) for x in examples(3)]
        await asyncio.wait_for(asyncio.gather(first, *rest), timeout=10)
    finally:
        batcher.close()
    assert recorder.batch_sizes == [4]


async def test_batches_never_exceed_max_size() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher("test", max_size=4, max_wait_s=0.2, max_queued=64)
    try:
        tasks = [asyncio.ensure_future(batcher.submit(recorder, x)) for x in examples(10)]
        await asyncio.sleep(0)  # let every submit enqueue before the worker may run
        gate.set()
        await asyncio.gather(*tasks)
    finally:
        batcher.close()
    assert sum(recorder.batch_sizes) == 10
    assert max(recorder.batch_sizes) <= 4


async def test_different_functions_are_never_mixed_in_one_batch() -> None:
    """After a hot swap, old- and new-version requests may wait together."""
    old_model, new_model = Recorder(), Recorder()
    batcher = MicroBatcher("test", max_size=8, max_wait_s=0.2, max_queued=64)
    try:
        await asyncio.gather(
            *(batcher.submit(old_model, x) for x in examples(3)),
            *(batcher.submit(new_model, x) for x in examples(2)),
        )
    finally:
        batcher.close()
    assert old_model.batch_sizes == [3]
    assert new_model.batch_sizes == [2]


async def test_a_failing_call_fails_every_request_in_its_batch_and_the_worker_survives() -> None:
    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("model exploded")

    batcher = MicroBatcher("test", max_size=8, max_wait_s=0.2, max_queued=64)
    try:
        results = await asyncio.gather(
            *(batcher.submit(broken, x) for x in examples(3)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        (second,) = examples(2)[1:]
        assert np.array_equal(await batcher.submit(Recorder(), second), np.full((1, 2, 2), 2))
    finally:
        batcher.close()


async def test_a_function_returning_the_wrong_number_of_rows_is_an_error() -> None:
    def first_row_only(batch: np.ndarray) -> np.ndarray:
        return batch[:1]

    batcher = MicroBatcher("test", max_size=8, max_wait_s=0.2, max_queued=64)
    try:
        with pytest.raises(RuntimeError, match="1 outputs for 2 inputs"):
            await asyncio.gather(*(batcher.submit(first_row_only, x) for x in examples(2)))
    finally:
        batcher.close()


async def test_close_finishes_queued_work_then_refuses_new_work() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher("test", max_size=2, max_wait_s=0, max_queued=64)
    tasks = [asyncio.ensure_future(batcher.submit(recorder, x)) for x in examples(5)]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(asyncio.to_thread(batcher.close))
    await asyncio.sleep(0.05)
    gate.set()
    await closing
    results = await asyncio.gather(*tasks)
    assert len(results) == 5
    assert sum(recorder.batch_sizes) == 5
    with pytest.raises(BatcherClosedError):
        await batcher.submit(recorder, examples(1)[0])


async def test_an_empty_request_is_refused() -> None:
    batcher = MicroBatcher("test", max_size=4, max_wait_s=0, max_queued=64)
    try:
        with pytest.raises(ValueError, match="at least one"):
            await batcher.submit(Recorder(), np.zeros((0, 2, 2), np.float32))
    finally:
        batcher.close()


@pytest.mark.parametrize(
    ("max_size", "max_wait_s", "max_queued"), [(0, 0.0, 4), (4, -1.0, 4), (4, 0.0, 0)]
)
def test_bad_limits_are_refused(max_size: int, max_wait_s: float, max_queued: int) -> None:
    with pytest.raises(ValueError):
        MicroBatcher("test", max_size=max_size, max_wait_s=max_wait_s, max_queued=max_queued)


class Observer:
    """Records what a batcher reports, as the metrics would."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.depths: list[int] = []
        self.waits: list[float] = []

    def batch(self, rows: int) -> None:
        self.batches.append(rows)

    def queue_depth(self, rows: int) -> None:
        self.depths.append(rows)

    def queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)


def values_seen(results: list[np.ndarray]) -> set[float]:
    """Which requests' rows came back (each request's pixels are its own value)."""
    return {float(result.flat[0]) / 2 for result in results}


async def test_batch_sizes_queue_depth_and_queue_wait_are_reported() -> None:
    observer, recorder = Observer(), Recorder()
    batcher = MicroBatcher("test", max_size=8, max_wait_s=0.1, max_queued=8, observer=observer)
    try:
        await asyncio.gather(*(batcher.submit(recorder, x) for x in examples(2, rows=2)))
    finally:
        batcher.close()
    assert observer.batches == [4]
    assert observer.depths == [2, 4, 0]
    assert len(observer.waits) == 2
    assert all(0.09 <= wait < 5 for wait in observer.waits)  # both waited for the batch window


async def test_a_request_that_does_not_fit_the_queue_is_refused_at_once_and_never_runs() -> None:
    recorder = Recorder()
    batcher = MicroBatcher("test", max_size=8, max_wait_s=10, max_queued=3)
    waiting = [asyncio.ensure_future(batcher.submit(recorder, x)) for x in examples(3)]
    await asyncio.sleep(0)  # all three queued: the batch window is still open
    assert batcher.queued_rows == 3
    with pytest.raises(QueueFullError, match="queue is full"):
        batcher.check_room(1)
    refused = np.full((1, 2, 2), 99, np.float32)
    start = time.monotonic()
    with pytest.raises(QueueFullError):
        await batcher.submit(recorder, refused)
    assert time.monotonic() - start < 1
    await asyncio.to_thread(batcher.close)  # closing runs the queued batch at once
    results = await asyncio.gather(*waiting)
    assert recorder.batch_sizes == [3]
    assert values_seen(results) == {0, 1, 2}


async def gated_first_call(batcher: MicroBatcher, recorder: Recorder) -> asyncio.Future:
    """Submit one request that the worker takes and holds in the model call (the gate)."""
    running = asyncio.ensure_future(batcher.submit(recorder, np.full((1, 2, 2), 7, np.float32)))
    await asyncio.sleep(0)  # queued
    while batcher.queued_rows:  # wait for the worker to take it
        await asyncio.sleep(0.01)
    return running


async def test_a_request_whose_deadline_passes_in_the_queue_is_refused_and_never_runs() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher("test", max_size=8, max_wait_s=0, max_queued=8)
    try:
        running = await gated_first_call(batcher, recorder)
        late = batcher.submit(recorder, examples(1)[0], Deadline.after(0.1))
        patient = asyncio.ensure_future(batcher.submit(recorder, examples(2)[1]))
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="0.1 s deadline"):
            await late
        assert time.monotonic() - start < 1  # refused on time, not when the model was free
        assert batcher.queued_rows == 1
        gate.set()
        results = [await running, await patient]
    finally:
        gate.set()
        batcher.close()
    assert values_seen(results) == {7, 1}
    assert sum(recorder.batch_sizes) == 2  # the late request never reached the model


async def test_the_worker_drops_expired_requests_even_when_their_caller_is_slow_to_notice() -> None:
    """The event loop is blocked (its timers cannot fire) while the deadline passes: the
    worker itself must leave the expired request out of the next batch."""
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher("test", max_size=8, max_wait_s=0, max_queued=8)
    try:
        running = await gated_first_call(batcher, recorder)
        late = asyncio.ensure_future(batcher.submit(recorder, examples(1)[0], Deadline.after(0.1)))
        patient = asyncio.ensure_future(batcher.submit(recorder, examples(2)[1]))
        await asyncio.sleep(0)  # both queued
        time.sleep(0.2)  # blocks the loop: the late request's own timeout cannot run
        gate.set()
        deadline = time.monotonic() + 5
        while sum(recorder.batch_sizes) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # still blocking: the worker runs the next batch meanwhile
        with pytest.raises(DeadlineExceededError):
            await late
        results = [await running, await patient]
    finally:
        gate.set()
        batcher.close()
    assert recorder.batch_sizes == [1, 1]
    assert values_seen(results) == {7, 1}


async def test_a_request_already_past_its_deadline_is_refused_without_queueing() -> None:
    recorder = Recorder()
    batcher = MicroBatcher("test", max_size=8, max_wait_s=0, max_queued=8)
    try:
        with pytest.raises(DeadlineExceededError):
            await batcher.submit(recorder, examples(1)[0], Deadline.after(0))
    finally:
        batcher.close()
    assert recorder.batch_sizes == []


async def test_a_request_that_started_before_its_deadline_gets_its_result() -> None:
    def slow(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.3)
        return batch * 2

    batcher = MicroBatcher("test", max_size=8, max_wait_s=0, max_queued=8)
    try:
        result = await batcher.submit(slow, examples(2)[1], Deadline.after(0.1))
    finally:
        batcher.close()
    assert np.array_equal(result, np.full((1, 2, 2), 2))


async def test_a_cancelled_request_leaves_the_queue_and_never_runs() -> None:
    """What happens when the client disconnects: the endpoint's task is cancelled."""
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher("test", max_size=8, max_wait_s=0, max_queued=8)
    try:
        running = await gated_first_call(batcher, recorder)
        gone = asyncio.ensure_future(batcher.submit(recorder, examples(1)[0]))
        patient = asyncio.ensure_future(batcher.submit(recorder, examples(2)[1]))
        await asyncio.sleep(0)
        assert batcher.queued_rows == 2
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert batcher.queued_rows == 1
        gate.set()
        results = [await running, await patient]
    finally:
        gate.set()
        batcher.close()
    assert recorder.batch_sizes == [1, 1]
    assert values_seen(results) == {7, 1}
