"""The micro-batcher without HTTP or TensorFlow: a recording numpy function stands in."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from app.core.batching import BatcherClosedError, MicroBatcher

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
    batcher = MicroBatcher("test", max_size=8, max_wait_s=0.2)
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
    batcher = MicroBatcher("test", max_size=4, max_wait_s=0.2)
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
    batcher = MicroBatcher("test", max_size=4, max_wait_s=0.2)
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


async def test_batches_never_exceed_max_size() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher("test", max_size=4, max_wait_s=0.2)
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
    batcher = MicroBatcher("test", max_size=8, max_wait_s=0.2)
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

    batcher = MicroBatcher("test", max_size=8, max_wait_s=0.2)
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

    batcher = MicroBatcher("test", max_size=8, max_wait_s=0.2)
    try:
        with pytest.raises(RuntimeError, match="1 outputs for 2 inputs"):
            await asyncio.gather(*(batcher.submit(first_row_only, x) for x in examples(2)))
    finally:
        batcher.close()


async def test_close_finishes_queued_work_then_refuses_new_work() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = MicroBatcher("test", max_size=2, max_wait_s=0)
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
    batcher = MicroBatcher("test", max_size=4, max_wait_s=0)
    try:
        with pytest.raises(ValueError, match="at least one"):
            await batcher.submit(Recorder(), np.zeros((0, 2, 2), np.float32))
    finally:
        batcher.close()


async def test_batch_sizes_are_reported() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher("test", max_size=8, max_wait_s=0.2, on_batch=sizes.append)
    try:
        await asyncio.gather(*(batcher.submit(Recorder(), x) for x in examples(1)))
    finally:
        batcher.close()
    assert sizes == [1]


@pytest.mark.parametrize(("max_size", "max_wait_s"), [(0, 0.0), (4, -1.0)])
def test_bad_limits_are_refused(max_size: int, max_wait_s: float) -> None:
    with pytest.raises(ValueError):
        MicroBatcher("test", max_size=max_size, max_wait_s=max_wait_s)
