"""Prometheus metrics, kept in a registry per app so several apps (tests) never collide.

Under ``python -m app`` with several workers, ``PROMETHEUS_MULTIPROC_DIR`` is set: every
worker process writes its values to files there and ``/metrics``, whichever worker answers,
reads them all, so counters, histograms and the queue depth are the whole service's sums.
The model-version gauge is reported per live worker process (a ``pid`` label), which shows a
reload reaching each of them.
"""

from __future__ import annotations

import os

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.core.errors import ClientDisconnectedError, DeadlineExceededError, QueueFullError
from app.core.registry import AUTOENCODER, CLASSIFIER, INDEX, ModelSet

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# OOD score / threshold: 1.0 is the flag boundary for every model, so the share above it is
# the flag rate; the finer buckets below it show traffic creeping towards it.
_OOD_RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 4.0, 10.0, 100.0)
_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SHED_REASONS = (QueueFullError.reason, DeadlineExceededError.reason, ClientDisconnectedError.reason)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cellsign_requests",
            "HTTP requests by route template, method and status code.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cellsign_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ["endpoint", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "cellsign_batch_size",
            "Examples per model call made by each micro-batcher.",
            ["batcher"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "cellsign_queue_depth",
            "Images waiting in each micro-batcher's queue.",
            ["batcher"],
            registry=self.registry,
            multiprocess_mode="livesum",  # summed over the live worker processes
        )
        self.queue_wait = Histogram(
            "cellsign_queue_wait_seconds",
            "Time a request (or chunk of one) waited in its micro-batcher before its model call.",
            ["batcher"],
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.shed = Counter(
            "cellsign_shed_requests",
            "Requests dropped before their model ran, by batcher and reason "
            "(queue_full, deadline, disconnected).",
            ["batcher", "reason"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "cellsign_model_version",
            "Version currently serving (0 when none is loaded).",
            ["model"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        for name in (CLASSIFIER, AUTOENCODER, INDEX):
            self.model_version.labels(model=name).set(0)
        self.ood_ratio = Histogram(
            "cellsign_ood_score_ratio",
            "Out-of-distribution score of each input divided by the model's threshold (above 1"
            " = flagged as unlike the training data), by model name.",
            ["model"],
            buckets=_OOD_RATIO_BUCKETS,
            registry=self.registry,
        )

    def observe_ood(self, model: str, ratios: np.ndarray) -> None:
        histogram = self.ood_ratio.labels(model=model)
        for ratio in ratios:
            histogram.observe(float(ratio))

    def batcher_observer(self, batcher: str) -> BatcherMetrics:
        """The observer one micro-batcher reports to; its series start at zero."""
        for reason in SHED_REASONS:
            self.shed.labels(batcher, reason)
        return BatcherMetrics(self, batcher)

    def observe_models(self, models: ModelSet) -> None:
        for name, model in (
            (CLASSIFIER, models.classifier),
            (AUTOENCODER, models.autoencoder),
            (INDEX, models.index),
        ):
            self.model_version.labels(model=name).set(model.version if model else 0)

    def exposition(self) -> bytes:
        if _multiprocess_dir() is None:
            return generate_latest(self.registry)
        every_process = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_process)
        return generate_latest(every_process)

    def process_exiting(self) -> None:
        """Drop this process's per-process gauges from the service's view."""
        if _multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class BatcherMetrics:
    """A micro-batcher's ``BatchObserver``: its labelled series, looked up once."""

    def __init__(self, metrics: ServiceMetrics, batcher: str) -> None:
        self._batch_size = metrics.batch_size.labels(batcher=batcher)
        self._queue_depth = metrics.queue_depth.labels(batcher=batcher)
        self._queue_wait = metrics.queue_wait.labels(batcher=batcher)

    def batch(self, rows: int) -> None:
        self._batch_size.observe(rows)

    def queue_depth(self, rows: int) -> None:
        self._queue_depth.set(rows)

    def queue_wait(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)
