"""An OpenTelemetry provider that keeps finished spans in memory, and ways to read them."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

INCOMING_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
INCOMING_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{INCOMING_TRACE_ID}-{INCOMING_SPAN_ID}-01"


def recording_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def trace_id(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def parent_id(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


def span_id(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


def one_named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = [span for span in spans if span.name == name]
    return span
