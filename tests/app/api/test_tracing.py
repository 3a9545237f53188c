"""Spans of a request, captured in memory: they join the caller's trace and nest by stage.

The request's own span is FastAPI's server span, named ``METHOD /route`` after the HTTP
semantic conventions (the "receive" span). Inside it the inference endpoints add ``read`` (the
upload), ``decode``, ``queue wait``, ``model call`` and ``encode`` (the JSON or PNG answer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.api.middleware.request_context import fastapi_telemetry
from app.main import create_app
from tests.app.helpers import running_client, settings_for
from tests.app.samples import image_bytes
from tests.app.spans import (
    INCOMING_SPAN_ID,
    INCOMING_TRACE_ID,
    TRACEPARENT,
    one_named,
    parent_id,
    recording_provider,
    span_id,
    trace_id,
)

pytestmark = pytest.mark.anyio

STAGES = ("read", "decode", "queue wait", "model call", "encode")


@pytest.fixture(scope="module")
async def traced(
    quick_models: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, InMemorySpanExporter]]:
    provider, exporter = recording_provider()
    app = create_app(settings_for(quick_models), tracer_provider=provider)
    async with running_client(app) as client:
        yield client, exporter


async def request_spans(
    traced: tuple[httpx.AsyncClient, InMemorySpanExporter], method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, tuple[ReadableSpan, ...]]:
    """One request with nothing else recorded: its response and the spans it finished."""
    client, exporter = traced
    exporter.clear()
    response = await client.request(method, path, **kwargs)
    return response, exporter.get_finished_spans()


async def test_classify_spans_join_the_incoming_trace_and_nest_by_stage(
    traced: tuple[httpx.AsyncClient, InMemorySpanExporter],
) -> None:
    response, spans = await request_spans(
        traced,
        "POST",
        "/classify",
        files={"file": ("hand.png", image_bytes("PNG"))},
        headers={"traceparent": TRACEPARENT},
    )
    assert response.status_code == 200
    assert {trace_id(span) for span in spans} == {INCOMING_TRACE_ID}
    server = one_named(spans, "POST /classify")
    assert server.kind == SpanKind.SERVER
    assert parent_id(server) == INCOMING_SPAN_ID
    assert server.attributes["http.response.status_code"] == 200
    for name in STAGES:
        assert parent_id(one_named(spans, name)) == span_id(server), name
    read, decode, wait, call, encode = (one_named(spans, name) for name in STAGES)
    assert read.end_time <= decode.start_time
    assert decode.end_time <= wait.start_time  # the image is decoded before it is queued
    assert wait.end_time == call.start_time
    assert call.end_time <= encode.start_time
    assert call.attributes["cellsign.batcher"] == "classify"
    assert decode.attributes["files"] == 1


async def test_denoise_has_an_encode_span_after_the_model_call(
    traced: tuple[httpx.AsyncClient, InMemorySpanExporter],
) -> None:
    response, spans = await request_spans(
        traced, "POST", "/denoise", files={"file": ("cell.png", image_bytes("PNG"))}
    )
    assert response.status_code == 200
    server = one_named(spans, "POST /denoise")
    encode, call = one_named(spans, "encode"), one_named(spans, "model call")
    assert parent_id(encode) == parent_id(call) == span_id(server)
    assert call.end_time <= encode.start_time
    assert parent_id(one_named(spans, "POST /denoise")) is None  # no traceparent: a new trace


async def test_denoise_as_json_is_encoded_in_one_span(
    traced: tuple[httpx.AsyncClient, InMemorySpanExporter],
) -> None:
    response, spans = await request_spans(
        traced,
        "POST",
        "/denoise",
        files={"file": ("cell.png", image_bytes("PNG"))},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200
    encode = one_named(spans, "encode")  # the PNG and its JSON
    assert parent_id(encode) == span_id(one_named(spans, "POST /denoise"))


async def test_a_malformed_traceparent_starts_a_new_trace(
    traced: tuple[httpx.AsyncClient, InMemorySpanExporter],
) -> None:
    bad = f"00-{INCOMING_TRACE_ID}-{INCOMING_SPAN_ID}-zz"
    response, spans = await request_spans(traced, "GET", "/healthz", headers={"traceparent": bad})
    assert response.status_code == 200
    server = one_named(spans, "GET /healthz")
    assert parent_id(server) is None
    assert trace_id(server) != INCOMING_TRACE_ID


async def test_an_error_response_is_traced_too(
    traced: tuple[httpx.AsyncClient, InMemorySpanExporter],
) -> None:
    response, spans = await request_spans(
        traced, "POST", "/classify", files={"file": ("a.txt", b"text")}
    )
    assert response.status_code == 415
    server = one_named(spans, "POST /classify")
    assert server.attributes["http.response.status_code"] == 415


def test_without_an_endpoint_nothing_is_traced() -> None:
    """The default: FastAPI's tracing is off and no provider exists, global or ours."""
    config = fastapi_telemetry(None)
    assert config["tracing"] is False
    assert config["auto_configure"] is False
    assert settings_for(Path("models")).otel_exporter_otlp_endpoint is None
