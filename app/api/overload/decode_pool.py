"""Where uploads are decoded, and how long a request may wait for it: a few threads, fewer
slots for large images, and nothing past the request's deadline."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

from app.core.deadline import Deadline
from app.core.errors import DeadlineExceededError
from app.settings import Settings

# Decode cost (``decode_for_model``'s unit: a megapixel decoded at full size, or 4 MP of a
# JPEG decoded at reduced scale) above which an upload counts against ``DecodePool.large``.
LARGE_IMAGE_COST = 4_000_000

T = TypeVar("T")


@dataclass
class DecodeWait:
    """Whether a request's decoding is waiting (for a pool thread, or for a large-decode
    slot) or working, as its deadline finds it: the two answer differently."""

    waiting: bool = True


class DecodeOverranError(DeadlineExceededError):
    """The request's decoding started in time but had not finished at its deadline. Not an
    overload the client should retry into (no ``Retry-After``): the files themselves, or a
    CPU shared with other work, made it slow."""

    retry_after_s = None


@dataclass(frozen=True)
class DecodePool:
    """Where uploads are decoded: on up to ``threads`` worker threads at once, of which at
    most ``large`` decode an image over ``LARGE_IMAGE_COST``.

    Several threads let a burst of small uploads decode together, so their requests reach
    the micro-batcher together and share one model call; too many take the interpreter lock
    from the event loop (docs/overload.md has the measurements behind the default). Few
    large decodes keep the memory and CPU that big or hostile images take bounded.

    A plain executor, not anyio's ``to_thread``: its limiter and checkpoints made a hop to
    a thread and back cost the event loop two to four times the CPU
    (docs/history/performance-history.md).
    """

    threads: ThreadPoolExecutor
    large: threading.BoundedSemaphore

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodePool:
        return cls(
            ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode"),
            threading.BoundedSemaphore(settings.large_decode_limit),
        )

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` on a pool thread, in this task's context (its trace and timings); work
        that has not started when the caller is cancelled never runs."""
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.threads, context.run, work)

    async def run_by(self, deadline: Deadline, work: Callable[[DecodeWait], T]) -> T:
        """``work(wait)`` on a pool thread, answered by ``deadline``: ``DeadlineExceededError``
        (503, ``Retry-After``: the server is overloaded) when it was still waiting then, for
        a thread or for a large-decode slot (``wait``, which ``work`` keeps up to date through
        ``large_slot``), and ``DecodeOverranError`` when it had started decoding. The thread
        finishes the file it is on, each bounded by the input gate's budgets."""
        wait = DecodeWait()

        def started() -> T:
            wait.waiting = False
            return work(wait)

        try:
            async with asyncio.timeout(deadline.remaining()):
                return await self.run(started)
        except TimeoutError:
            if wait.waiting:
                raise DeadlineExceededError(late_detail(deadline)) from None
            raise DecodeOverranError(_overran_detail(deadline)) from None

    def close(self) -> None:
        """Drop what has not started; threads end once their current decode is done."""
        self.threads.shutdown(wait=False, cancel_futures=True)


def large_slot(
    large: threading.BoundedSemaphore,
    cost: int,
    deadline: Deadline,
    wait: DecodeWait | None = None,
) -> AbstractContextManager[object]:
    """Held around the decode of a file that costs ``cost``: nothing up to
    ``LARGE_IMAGE_COST``, else one of the ``large`` slots, waited for until ``deadline``
    (``DeadlineExceededError``; ``wait`` says the request is waiting meanwhile)."""
    if cost <= LARGE_IMAGE_COST:
        return contextlib.nullcontext()
    if wait is not None:
        wait.waiting = True
    if not large.acquire(timeout=max(deadline.remaining(), 0.0)):
        raise DeadlineExceededError(late_detail(deadline))
    if wait is not None:
        wait.waiting = False
    return _released(large)


def late_detail(deadline: Deadline) -> str:
    """What a request that waited for decoding past its deadline is told."""
    return (
        f"overloaded: no decoding thread was free within the request's {deadline.timeout_s:g} s"
        " deadline; retry later"
    )


def _overran_detail(deadline: Deadline) -> str:
    return (
        f"decoding the uploads started in time but was still running at the request's "
        f"{deadline.timeout_s:g} s deadline; nothing was inferred"
    )


@contextlib.contextmanager
def _released(slot: threading.BoundedSemaphore) -> Iterator[None]:
    """Hold the already acquired ``slot`` until the block ends."""
    try:
        yield
    finally:
        slot.release()
