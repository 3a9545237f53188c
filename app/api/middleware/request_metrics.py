"""Counts and times every HTTP request into the service's metrics (``app.api.metrics``)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.metrics import ServiceMetrics

# A client may send any token as the method; every other one is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class RequestMetricsMiddleware:
    """Counts and times every HTTP request, labelled by route template (``/gallery/{id}.png``,
    never the raw path; "unmatched" for a 404) and by method (unknown ones as "other"), so
    no client can grow the label set."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._by_labels: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            count, latency = self._series(endpoint, method_label(scope["method"]), status)
            count.inc()
            latency.observe(time.perf_counter() - start)

    def _series(self, endpoint: str, method: str, status: int) -> tuple[Any, Any]:
        """The request counter and latency histogram of these labels, looked up once (a
        ``labels()`` call takes a lock and checks every value); the labels are bounded."""
        key = (endpoint, method, status)
        series = self._by_labels.get(key)
        if series is None:
            metrics = self.metrics
            series = (
                metrics.requests.labels(endpoint, method, str(status)),
                metrics.latency.labels(endpoint, method),
            )
            self._by_labels[key] = series
        return series
