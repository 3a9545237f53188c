"""Admission control: at most a fixed number of inference requests in progress; the next
ones wait, without being read, for a slot until their deadline, then get a 503.

Under overload the event loop, not the model, is the first thing to run out: every request
in progress gets its share of the loop to receive and parse its multipart body, so with
eight times more clients than the service serves, each of them would wait eight times
longer before its work even reached the micro-batcher queue, and ``/healthz`` with them.
Requests waiting for a slot cost no CPU (their body stays unread in the socket). A request
still waiting at its deadline gets a 503 with ``Retry-After``; so does one arriving when
``WAITING_PER_SLOT`` times the limit are already waiting. Answering the excess at once
instead would not help against clients that retry at once: the refusals themselves would
flood the loop. A free slot goes to the request that arrived last: under sustained overload
first come, first served would admit only requests that have spent nearly all of their
deadline waiting, which then miss it further on, so nothing at all would be served.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import shed_response
from app.api.metrics import ServiceMetrics
from app.api.route_map import RouteMap
from app.core.deadline import Deadline
from app.core.errors import DeadlineExceededError, QueueFullError

TIMEOUT_HEADER = "X-Request-Timeout"
MAX_TIMEOUT_CHARS = 32
# ASCII digits ([0-9] is no wider), an optional fraction and an optional exponent.
_SECONDS = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
WAITING_PER_SLOT = 4


@dataclass(frozen=True)
class Budget:
    """Seconds a request may still wait to reach its model, out of its ``timeout_s``."""

    remaining_s: float
    timeout_s: float

    def start(self) -> Deadline:
        return Deadline(time.monotonic() + self.remaining_s, self.timeout_s)


def asked_timeout(value: str) -> float | None:
    """Seconds an ``X-Request-Timeout`` value asks for; None unless a finite number above 0
    written in at most ``MAX_TIMEOUT_CHARS`` ASCII characters.

    ``float()`` alone would take any length, Unicode digits, spaces, underscores, ``nan``
    and ``inf``; the grammar below keeps the plain decimal and exponent forms only, and the
    length is checked first so the work is fixed whatever the client sends."""
    if len(value) > MAX_TIMEOUT_CHARS or _SECONDS.fullmatch(value) is None:
        return None
    seconds = float(value)
    return seconds if 0 < seconds < math.inf else None  # 1e999 reads as inf


def request_timeout(headers: Headers, limit_s: float) -> float:
    """The request's timeout: ``X-Request-Timeout`` capped to ``limit_s``, or ``limit_s``
    when absent or invalid (the endpoint answers an invalid one with a 422)."""
    value = headers.get(TIMEOUT_HEADER)
    asked = asked_timeout(value) if value is not None else None
    return min(asked, limit_s) if asked is not None else limit_s


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        timeout_s: float,
        admitted: Sequence[tuple[BaseRoute, str]],
        metrics: ServiceMetrics,
    ) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s
        # The inference routes, each with the batcher its refusals are counted under.
        self.label_of = RouteMap(admitted)
        self.metrics = metrics
        self.active = 0  # one event loop: no lock needed
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        batcher = self.label_of.get(scope) if scope["type"] == "http" else None
        if batcher is None:
            await self.app(scope, receive, send)
            return
        deadline = Deadline.after(request_timeout(Headers(scope=scope), self.timeout_s))
        try:
            await self._enter(deadline)
        except (QueueFullError, DeadlineExceededError) as error:
            self.metrics.shed.labels(batcher, error.reason).inc()
            await shed_response(scope["path"], error)(scope, receive, send)
            return
        # What is left once admitted; the endpoint starts it when the body has arrived, so a
        # slow upload does not use up the time allowed for waiting (request.state.budget).
        scope.setdefault("state", {})["budget"] = Budget(deadline.remaining(), deadline.timeout_s)
        try:
            await self.app(scope, receive, send)
        finally:
            self._leave()

    async def _enter(self, deadline: Deadline) -> None:
        if self.active < self.limit and not self._waiting:
            self.active += 1
            return
        if len(self._waiting) >= WAITING_PER_SLOT * self.limit:
            raise QueueFullError(
                f"overloaded: {len(self._waiting)} requests already wait for one of the "
                f"{self.limit} inference slots; retry later"
            )
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            async with asyncio.timeout(deadline.remaining()):
                await turn  # _leave hands its slot over: ``active`` already counts us
        except TimeoutError:
            if turn.done() and not turn.cancelled():
                return  # the slot arrived as the deadline passed: take it
            raise DeadlineExceededError(
                f"overloaded: no inference slot came free within the request's "
                f"{deadline.timeout_s:g} s deadline; retry later"
            ) from None
        finally:
            if not turn.done():
                turn.cancel()
            if turn in self._waiting:
                self._waiting.remove(turn)

    def _leave(self) -> None:
        """Hand the slot to the newest request still waiting (most time left), or free it."""
        while self._waiting:
            turn = self._waiting.pop()
            if not turn.done():
                turn.set_result(None)
                return
        self.active -= 1
