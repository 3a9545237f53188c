"""A request's deadline as one monotonic instant, shared by decoding and the micro-batcher."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    """The ``time.monotonic()`` instant by which a request's work must have started."""

    at: float
    timeout_s: float  # what the request was given, for messages

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.at
