"""Dynamic micro-batching with a bounded queue: concurrent requests share one model call.

Requests ``await submit(function, examples, deadline)`` with all their images as one array; a
dedicated worker thread waits up to ``max_wait_s`` after it finds work for more (or until
``max_size`` rows), takes the queued requests that target the same function (a hot reload
may leave two model versions in the queue) and runs that function once, off the event loop.
A request with more than ``max_size`` images is cut into chunks of at most ``max_size``.

Overload control: at most ``max_queued`` images wait, and a request that does not fit is
refused at once (``QueueFullError``) instead of making everyone behind it slower. The model
only runs work somebody still waits for: a request that has not reached the model by its
deadline gets ``DeadlineExceededError`` and leaves the queue, and one whose caller was
cancelled (the client went away) is withdrawn. ``close()`` finishes everything queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from app.core import tracing
from app.core.deadline import Deadline
from app.core.errors import DeadlineExceededError, QueueFullError

logger = logging.getLogger(__name__)

BatchFunction = Callable[[np.ndarray], np.ndarray]


class BatcherClosedError(RuntimeError):
    """Submitted after ``close()``: the server is shutting down."""


class BatchObserver(Protocol):
    """What a batcher reports (the metrics); called from the event loop and the worker."""

    def batch(self, rows: int) -> None:
        """A model call on ``rows`` examples is about to start."""

    def queue_depth(self, rows: int) -> None:
        """Examples now waiting in the queue."""

    def queue_wait(self, seconds: float) -> None:
        """How long one request (chunk) waited between submit and its model call."""


@dataclass(eq=False)
class _Pending:
    function: BatchFunction
    examples: np.ndarray  # (rows, ...)
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    deadline: Deadline | None  # the model call must start by then
    queued_at: float
    queued: bool = True  # False once the worker took it or it was dropped or withdrawn
    # Built in submit(), inside the request: its timings and trace context, for the worker.
    work: tracing.QueuedWork | None = field(default_factory=tracing.queued)


class MicroBatcher:
    """One worker thread per batcher; ``observer`` lets metrics watch batches and the queue."""

    def __init__(
        self,
        name: str,
        max_size: int,
        max_wait_s: float,
        max_queued: int,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued}")
        self.name = name
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.max_queued = max_queued
        self._observer = observer
        self._changed = threading.Condition()  # guards everything below; wakes the worker
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._closed = False
        self._worker = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def check_room(self, rows: int) -> None:
        """Refuse a request of ``rows`` examples that would not fit the queue now, before
        its caller spends CPU decoding it (``submit`` checks again)."""
        if self._queued_rows + rows > self.max_queued:
            raise QueueFullError(self._full_detail())

    async def submit(
        self, function: BatchFunction, examples: np.ndarray, deadline: Deadline | None = None
    ) -> np.ndarray:
        """Run ``function`` on ``examples`` (one row per image) inside batches shared with
        other requests; return the matching rows of the output.

        Raises ``QueueFullError`` when the queue has no room, and ``DeadlineExceededError``
        when a chunk has not started by ``deadline`` (chunks already running are not stopped).
        """
        if len(examples) == 0:
            raise ValueError("submit needs at least one example")
        if deadline is not None and deadline.expired():
            raise DeadlineExceededError(self._late_detail(deadline))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        chunks = [
            _Pending(
                function,
                examples[start : start + self.max_size],
                loop.create_future(),
                loop,
                deadline,
                now,
            )
            for start in range(0, len(examples), self.max_size)
        ]
        with self._changed:
            if self._closed:
                raise BatcherClosedError(f"batcher {self.name} is shut down")
            if self._queued_rows + len(examples) > self.max_queued:
                raise QueueFullError(self._full_detail())
            idle = not self._queue
            self._queue.extend(chunks)
            self._queued_rows += len(examples)
            self._report_depth()
            # A collecting worker sleeps until its batch is due: it needs waking only to
            # start collecting or when a batch is full (a wake-up per request cost CPU).
            if idle or self._queued_rows >= self.max_size:
                self._changed.notify()
        # The deadline is a timer, not a wait with a timeout: awaiting the futures directly
        # costs the event loop far less per request.
        timer = None
        if deadline is not None:
            timer = loop.call_later(max(deadline.remaining(), 0.0), self._expire, chunks, deadline)
        try:
            outputs = [await chunk.future for chunk in chunks]
        except BaseException:  # deadline, failure, or cancelled because the client left
            self._withdraw(chunks)
            for chunk in chunks:
                chunk.future.cancel()  # whatever still runs resolves nothing
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _expire(self, chunks: list[_Pending], deadline: Deadline) -> None:
        """At the request's deadline: if part of it is still queued, it fails now (a chunk
        already in a model call would be wasted alone); if all of it runs, it waits."""
        if self._withdraw(chunks):
            error = DeadlineExceededError(self._late_detail(deadline))
            for chunk in chunks:
                if not chunk.future.done():
                    chunk.future.set_exception(error)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting work, finish what is queued, then stop the worker thread."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._worker.join(timeout_s)

    def _full_detail(self) -> str:
        return (
            f"overloaded: the {self.name} queue is full ({self._queued_rows} of "
            f"{self.max_queued} images waiting); retry later"
        )

    def _late_detail(self, deadline: Deadline) -> str:
        return (
            f"overloaded: the {self.name} model could not take this request within its "
            f"{deadline.timeout_s:g} s deadline; retry later"
        )

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self._queued_rows)

    def _withdraw(self, chunks: list[_Pending]) -> bool:
        """Take the caller's chunks that are still queued out of the queue; True if any was."""
        with self._changed:
            withdrawn = [chunk for chunk in chunks if chunk.queued]
            if withdrawn:
                self._remove(withdrawn)
            return bool(withdrawn)

    def _remove(self, items: list[_Pending]) -> None:
        """Drop ``items`` from the queue (the lock is held)."""
        for item in items:
            item.queued = False
            self._queued_rows -= len(item.examples)
        self._queue = deque(item for item in self._queue if item.queued)
        self._report_depth()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._execute(batch[0].function, batch)

    def _next_batch(self) -> list[_Pending] | None:
        """Block until a batch is due (full, ``max_wait_s`` after work was found, or closing)
        and take it out of the queue; None once closed and drained.

        Requests past their deadline or cancelled by their caller are dropped here, so they
        never reach the model.
        """
        with self._changed:
            collect_until: float | None = None
            while True:
                now = time.monotonic()
                self._drop_dead(now)
                if not self._queue:
                    if self._closed:
                        return None
                    collect_until = None
                    self._changed.wait()
                    continue
                if collect_until is None:
                    collect_until = now + self.max_wait_s
                batch, full = self._fitting()
                if full or self._closed or now >= collect_until:
                    self._remove(batch)
                    if self._observer is not None:
                        for item in batch:
                            self._observer.queue_wait(now - item.queued_at)
                    return batch
                self._changed.wait(collect_until - now)

    def _drop_dead(self, now: float) -> None:
        """Remove expired and cancelled requests; tell the expired ones why (lock held)."""
        dead = [
            item
            for item in self._queue
            if item.future.cancelled() or (item.deadline is not None and item.deadline.at <= now)
        ]
        if not dead:
            return
        self._remove(dead)
        _settle(
            [
                (item, None, DeadlineExceededError(self._late_detail(item.deadline)))
                for item in dead
                if item.deadline is not None and not item.future.cancelled()
            ]
        )

    def _fitting(self) -> tuple[list[_Pending], bool]:
        """The queued requests for the first one's function that fit in one batch, in order,
        and whether the batch is full (``max_size`` rows, or the next one would overflow it)."""
        function = self._queue[0].function
        batch: list[_Pending] = []
        rows = 0
        for item in self._queue:
            if item.function is not function:
                continue
            if rows + len(item.examples) > self.max_size:
                return batch, True
            batch.append(item)
            rows += len(item.examples)
        return batch, rows >= self.max_size

    def _execute(self, function: BatchFunction, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        if not live:
            return
        counts = [len(item.examples) for item in live]
        rows = sum(counts)
        if self._observer is not None:
            self._observer.batch(rows)
        try:
            with tracing.batch_call(self.name, rows, [item.work for item in live]):
                outputs = np.asarray(function(np.concatenate([item.examples for item in live])))
            if outputs.shape[0] != rows:
                raise RuntimeError(f"{self.name}: {outputs.shape[0]} outputs for {rows} inputs")
        except Exception as error:  # every waiter must hear about the failure
            logger.exception("batch of %d on %s failed", rows, self.name)
            _settle([(item, None, error) for item in live])
            return
        parts = np.split(outputs, np.cumsum(counts)[:-1])
        _settle([(item, output, None) for item, output in zip(live, parts, strict=True)])


_Outcome = tuple[_Pending, np.ndarray | None, BaseException | None]


def _settle(outcomes: list[_Outcome]) -> None:
    """Hand results to their requests' event loops (from the worker thread): one wake-up
    per loop for the whole batch, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, group)


def _resolve(outcomes: list[_Outcome]) -> None:
    for item, value, error in outcomes:
        if item.future.done():  # the request was cancelled (client went away)
            continue
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(value)  # type: ignore[arg-type]
