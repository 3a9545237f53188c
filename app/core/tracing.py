"""Per-request stage timings and OpenTelemetry spans, with no cost worth measuring when off.

The HTTP layer opens a ``RequestTrace`` for each request (``begin``/``end``); the inference
code marks its stages without knowing about HTTP:

* ``with stage("decode"):`` times a block and, when tracing is on, wraps it in a span that is a
  child of the current one. The duration is added to the request's ``stage_ms`` for the
  access log.
* The micro-batcher runs model calls for many requests at once in its own thread. Each queued
  chunk captures ``queued()`` at submit time (in the request's context); the worker wraps the
  call in ``batch_call(...)``. Every request then gets its own two child spans, "queue wait"
  (submit to the start of the call) and "model call" (the shared call, so requests batched
  together show identical model-call timings), tagged with the batch's id, rows and request
  count so that spans of one batch can be found together. That is the honest picture of a
  shared call, and keeps each request's trace complete.

Nothing here starts a span unless the request's ``tracer`` is set, which happens only when an
exporter is configured (``build_tracer_provider``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field

from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode, Tracer, TracerProvider

QUEUE_WAIT_SPAN = "queue wait"
MODEL_CALL_SPAN = "model call"
_batch_ids = itertools.count(1)


@dataclass(eq=False)
class RequestTrace:
    """One request: its ID, the tracer (None: tracing off) and how long each stage took.

    ``stage_ms`` is written from worker threads (decode, the batcher) and read once the
    response is done; readers use ``.get`` on known keys, never iterate it.
    """

    request_id: str
    tracer: Tracer | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)
    _last_batch_end_ns: int = 0  # a request cut into chunks waits only once per chunk

    def add(self, stage_name: str, milliseconds: float) -> None:
        self.stage_ms[stage_name] = self.stage_ms.get(stage_name, 0.0) + milliseconds


_current: ContextVar[RequestTrace | None] = ContextVar("cellsign_request_trace", default=None)


def begin(request: RequestTrace) -> Token[RequestTrace | None]:
    return _current.set(request)


def end(token: Token[RequestTrace | None]) -> None:
    _current.reset(token)


def current() -> RequestTrace | None:
    return _current.get()


@contextmanager
def stage(name: str, **attributes: str | int | float) -> Iterator[None]:
    """Time the block for the access log and, when tracing, record it as a span."""
    request = _current.get()
    if request is None:  # not inside an HTTP request (unit tests, benchmarks)
        yield
        return
    start = time.perf_counter()
    try:
        if request.tracer is None:
            yield
        else:
            with request.tracer.start_as_current_span(name, attributes=attributes):
                yield
    finally:
        request.add(name, (time.perf_counter() - start) * 1000)


@dataclass(eq=False)
class QueuedWork:
    """A chunk of one request waiting in a micro-batcher, as seen at submit time."""

    request: RequestTrace
    parent: otel_context.Context | None  # the submitting request's context, when tracing
    enqueued_ns: int

    def ran(
        self,
        batcher: str,
        batch: dict[str, str | int],
        started_ns: int,
        finished_ns: int,
        error: BaseException | None,
    ) -> None:
        """Called in the batcher's thread once the call that held this chunk returned."""
        request = self.request
        waited_from = max(self.enqueued_ns, request._last_batch_end_ns)
        request.add("queue", max(started_ns - waited_from, 0) / 1e6)
        request.add("model", (finished_ns - started_ns) / 1e6)
        request._last_batch_end_ns = finished_ns
        if request.tracer is None:
            return
        attributes = {"cellsign.batcher": batcher, **batch}
        request.tracer.start_span(
            QUEUE_WAIT_SPAN, context=self.parent, attributes=attributes, start_time=self.enqueued_ns
        ).end(end_time=started_ns)
        call = request.tracer.start_span(
            MODEL_CALL_SPAN, context=self.parent, attributes=attributes, start_time=started_ns
        )
        if error is not None:
            call.record_exception(error)
            call.set_status(Status(StatusCode.ERROR, type(error).__name__))
        call.end(end_time=finished_ns)


def queued() -> QueuedWork | None:
    """Capture the current request for a chunk about to be queued (None outside a request)."""
    request = _current.get()
    if request is None:
        return None
    parent = otel_context.get_current() if request.tracer is not None else None
    return QueuedWork(request, parent, time.time_ns())


@contextmanager
def batch_call(batcher: str, rows: int, works: Sequence[QueuedWork | None]) -> Iterator[None]:
    """Wrap one model call of a batcher; report it to every request whose rows it holds."""
    started_ns = time.time_ns()
    error: BaseException | None = None
    try:
        yield
    except BaseException as raised:
        error = raised
        raise
    finally:
        finished_ns = time.time_ns()
        batch: dict[str, str | int] = {
            "cellsign.batch.id": f"{batcher}-{next(_batch_ids)}",
            "cellsign.batch.rows": rows,
            "cellsign.batch.requests": len(works),
        }
        for work in works:
            if work is not None:
                work.ran(batcher, batch, started_ns, finished_ns, error)


def build_tracer_provider(otlp_endpoint: str | None, service_name: str) -> TracerProvider | None:
    """An SDK provider exporting over OTLP/HTTP to ``{otlp_endpoint}/v1/traces``, or None.

    The SDK and exporter are imported only here, so a server without an endpoint loads
    neither. Sampling and the exporter's headers, timeout and compression follow the standard
    ``OTEL_*`` variables the SDK reads itself; the provider flushes its spans at process exit.
    """
    if not otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = SdkTracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_of(provider: TracerProvider | None) -> Tracer | None:
    return provider.get_tracer("cellsign") if provider is not None else None
