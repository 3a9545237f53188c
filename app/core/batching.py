"""Dynamic micro-batching: concurrent requests share one model call.

Requests ``await submit(function, examples)`` with all their images as one array; a dedicated
worker thread takes the first waiting request, collects more for up to ``max_wait_s`` (or
until ``max_size`` rows), concatenates the ones that target the same function (a hot reload
may leave two model versions in the queue) and runs that function once, off the event loop.
A request with more than ``max_size`` images is cut into chunks of at most ``max_size``.
``close()`` finishes everything queued.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.core import tracing

logger = logging.getLogger(__name__)

BatchFunction = Callable[[np.ndarray], np.ndarray]


class BatcherClosedError(RuntimeError):
    """Submitted after ``close()``: the server is shutting down."""


@dataclass(eq=False)
class _Pending:
    function: BatchFunction
    examples: np.ndarray  # (rows, ...)
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    # Built in submit(), inside the request: its timings and trace context, for the worker.
    work: tracing.QueuedWork | None = field(default_factory=tracing.queued)


class MicroBatcher:
    """One worker thread per batcher; ``on_batch(rows)`` lets metrics observe batch sizes."""

    def __init__(
        self,
        name: str,
        max_size: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        self.name = name
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue()  # None: stop
        self._held: _Pending | None = None  # taken from the queue but did not fit the last batch
        self._closed = False
        self._close_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    async def submit(self, function: BatchFunction, examples: np.ndarray) -> np.ndarray:
        """Run ``function`` on ``examples`` (one row per image) inside batches shared with
        other requests; return the matching rows of the output."""
        if len(examples) == 0:
            raise ValueError("submit needs at least one example")
        loop = asyncio.get_running_loop()
        chunks = [
            _Pending(function, examples[start : start + self.max_size], loop.create_future(), loop)
            for start in range(0, len(examples), self.max_size)
        ]
        with self._close_lock:
            if self._closed:
                raise BatcherClosedError(f"batcher {self.name} is shut down")
            for chunk in chunks:
                self._queue.put(chunk)
        outputs = await asyncio.gather(*(chunk.future for chunk in chunks))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting work, finish what is queued, then stop the worker thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._worker.join(timeout_s)

    def _run(self) -> None:
        pending: list[_Pending] = []
        stopping = False
        while True:
            if not pending:
                first, self._held = self._held, None
                if first is None and not stopping:
                    first = self._queue.get()
                if first is None:
                    return
                pending = [first]
                stopping = self._collect(pending)
            function = pending[0].function
            batch = [item for item in pending if item.function is function]
            pending = [item for item in pending if item.function is not function]
            self._execute(function, batch)

    def _collect(self, items: list[_Pending]) -> bool:
        """Add queued requests to ``items`` until ``max_size`` rows or the wait is over; a
        request that would overflow is held for the next batch.

        Returns True when the stop marker was seen (everything before it is in ``items``).
        """
        rows = sum(len(item.examples) for item in items)
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(block=remaining > 0, timeout=max(remaining, 0.0))
            except queue.Empty:
                return False
            if item is None:
                return True
            if rows + len(item.examples) > self.max_size:
                self._held = item
                return False
            items.append(item)
            rows += len(item.examples)
        return False

    def _execute(self, function: BatchFunction, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        if not live:
            return
        counts = [len(item.examples) for item in live]
        rows = sum(counts)
        if self._on_batch is not None:
            self._on_batch(rows)
        try:
            with tracing.batch_call(self.name, rows, [item.work for item in live]):
                outputs = np.asarray(function(np.concatenate([item.examples for item in live])))
            if outputs.shape[0] != rows:
                raise RuntimeError(f"{self.name}: {outputs.shape[0]} outputs for {rows} inputs")
        except Exception as error:  # every waiter must hear about the failure
            logger.exception("batch of %d on %s failed", rows, self.name)
            for item in live:
                item.loop.call_soon_threadsafe(_resolve, item.future, None, error)
            return
        parts = np.split(outputs, np.cumsum(counts)[:-1])
        for item, output in zip(live, parts, strict=True):
            item.loop.call_soon_threadsafe(_resolve, item.future, output, None)


def _resolve(
    future: asyncio.Future[np.ndarray], value: np.ndarray | None, error: BaseException | None
) -> None:
    if future.done():  # the request was cancelled (client went away)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)  # type: ignore[arg-type]
