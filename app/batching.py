"""Dynamic micro-batching: concurrent requests share one model call.

Requests ``await submit(function, example)``; a dedicated worker thread takes the first
waiting example, collects more for up to ``max_wait_s`` (or until ``max_size``), stacks the
ones that target the same function (a hot reload may leave two model versions in the queue)
and runs that function once, off the event loop. ``close()`` finishes everything queued.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

BatchFunction = Callable[[np.ndarray], np.ndarray]


class BatcherClosedError(RuntimeError):
    """Submitted after ``close()``: the server is shutting down."""


@dataclass(eq=False)
class _Pending:
    function: BatchFunction
    example: np.ndarray
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class MicroBatcher:
    """One worker thread per batcher; ``on_batch(size)`` lets metrics observe batch sizes."""

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
        self._queue: queue.Queue[_Pending | object] = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    async def submit(self, function: BatchFunction, example: np.ndarray) -> np.ndarray:
        """Run ``function`` on ``example[None]`` inside a batch and return its row of the output."""
        loop = asyncio.get_running_loop()
        pending = _Pending(function, example, loop.create_future(), loop)
        with self._close_lock:
            if self._closed:
                raise BatcherClosedError(f"batcher {self.name} is shut down")
            self._queue.put(pending)
        return await pending.future

    def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting work, finish what is queued, then stop the worker thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._worker.join(timeout_s)

    def _run(self) -> None:
        pending: list[_Pending] = []
        stopping = False
        while True:
            if not pending:
                if stopping:
                    return
                first = self._queue.get()
                if first is _STOP:
                    return
                pending = [first]  # type: ignore[list-item]
                stopping = self._collect(pending)
            function = pending[0].function
            batch = [item for item in pending if item.function is function]
            pending = [item for item in pending if item.function is not function]
            self._execute(function, batch)

    def _collect(self, items: list[_Pending]) -> bool:
        """Add queued examples to ``items`` until it is full or the wait is over.

        Returns True when the stop marker was seen (everything before it is in ``items``).
        """
        deadline = time.monotonic() + self.max_wait_s
        while len(items) < self.max_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(block=remaining > 0, timeout=max(remaining, 0.0))
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            items.append(item)  # type: ignore[arg-type]
        return False

    def _execute(self, function: BatchFunction, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        if not live:
            return
        if self._on_batch is not None:
            self._on_batch(len(live))
        try:
            outputs = np.asarray(function(np.stack([item.example for item in live])))
            if outputs.shape[0] != len(live):
                count = outputs.shape[0]
                raise RuntimeError(f"{self.name}: {count} outputs for {len(live)} inputs")
        except Exception as error:  # every waiter must hear about the failure
            logger.exception("batch of %d on %s failed", len(live), self.name)
            for item in live:
                item.loop.call_soon_threadsafe(_resolve, item.future, None, error)
            return
        for item, output in zip(live, outputs, strict=True):
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
