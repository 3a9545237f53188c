"""Stage timings and spans without HTTP: ``stage``, and the batcher's per-request spans."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from app.core import tracing
from app.core.batching import MicroBatcher
from tests.app.spans import one_named, parent_id, recording_provider, span_id, trace_id

pytestmark = pytest.mark.anyio


def test_stage_outside_a_request_does_nothing() -> None:
    with tracing.stage("decode"):
        pass
    assert tracing.current() is None


def test_stage_adds_up_its_time_without_a_tracer() -> None:
    request = tracing.RequestTrace("r1")
    token = tracing.begin(request)
    try:
        for _ in range(2):
            with tracing.stage("decode"):
                time.sleep(0.01)
    finally:
        tracing.end(token)
    assert request.stage_ms["decode"] >= 20
    assert tracing.current() is None


def test_stage_is_a_child_span_of_the_current_one() -> None:
    provider, exporter = recording_provider()
    tracer = tracing.tracer_of(provider)
    assert tracer is not None
    token = tracing.begin(tracing.RequestTrace("r1", tracer))
    try:
        with tracer.start_as_current_span("request"), tracing.stage("decode", files=2):
            pass
    finally:
        tracing.end(token)
    spans = exporter.get_finished_spans()
    decode, request = one_named(spans, "decode"), one_named(spans, "request")
    assert parent_id(decode) == span_id(request)
    assert decode.attributes == {"files": 2}


def test_no_endpoint_means_no_provider() -> None:
    assert tracing.build_tracer_provider(None, "cellsign") is None
    assert tracing.build_tracer_provider("", "cellsign") is None
    assert tracing.tracer_of(None) is None


async def test_requests_sharing_a_batch_each_get_queue_and_model_spans() -> None:
    """Two requests (two contexts) land in one model call: each trace holds its own
    "queue wait" and "model call" spans; the model calls share timings and the batch id."""
    provider, exporter = recording_provider()
    tracer = tracing.tracer_of(provider)
    assert tracer is not None
    batcher = MicroBatcher("classify", max_size=8, max_wait_s=0.2, max_queued=64)
    requests = [tracing.RequestTrace(f"r{index}", tracer) for index in range(2)]

    def double(batch: np.ndarray) -> np.ndarray:  # one function: the batcher shares its calls
        return batch * 2

    async def one_request(request: tracing.RequestTrace) -> None:
        tracing.begin(request)  # each task runs in its own copy of the context
        with tracer.start_as_current_span(f"request {request.request_id}"):
            await batcher.submit(double, np.ones((1, 3), np.float32))

    try:
        await asyncio.gather(*(asyncio.create_task(one_request(r)) for r in requests))
    finally:
        batcher.close()
    spans = exporter.get_finished_spans()
    calls = [span for span in spans if span.name == tracing.MODEL_CALL_SPAN]
    waits = [span for span in spans if span.name == tracing.QUEUE_WAIT_SPAN]
    assert len(calls) == len(waits) == 2
    assert len({trace_id(span) for span in calls}) == 2
    assert calls[0].attributes == calls[1].attributes
    assert calls[0].attributes["cellsign.batch.rows"] == 2
    assert calls[0].attributes["cellsign.batch.requests"] == 2
    assert (calls[0].start_time, calls[0].end_time) == (calls[1].start_time, calls[1].end_time)
    for request in requests:
        root = one_named(spans, f"request {request.request_id}")
        (wait,) = [span for span in waits if parent_id(span) == span_id(root)]
        (call,) = [span for span in calls if parent_id(span) == span_id(root)]
        assert wait.end_time == call.start_time
        assert request.stage_ms["model"] == pytest.approx((call.end_time - call.start_time) / 1e6)
        assert request.stage_ms["queue"] == pytest.approx((wait.end_time - wait.start_time) / 1e6)


async def test_a_request_cut_into_chunks_counts_each_wait_once() -> None:
    """Three rows with max_size 1 run as three calls in turn: the queue time excludes the
    earlier chunks' model calls, so queue + model never exceeds the time spent waiting."""
    batcher = MicroBatcher("encode", max_size=1, max_wait_s=0, max_queued=64)
    request = tracing.RequestTrace("r1")

    def slow(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.05)
        return batch

    token = tracing.begin(request)
    try:
        started = time.perf_counter()
        await batcher.submit(slow, np.zeros((3, 2), np.float32))
        waited_ms = (time.perf_counter() - started) * 1000
    finally:
        tracing.end(token)
        batcher.close()
    assert request.stage_ms["model"] >= 150
    assert request.stage_ms["queue"] + request.stage_ms["model"] <= waited_ms


async def test_a_failed_model_call_is_an_error_span() -> None:
    provider, exporter = recording_provider()
    batcher = MicroBatcher("denoise", max_size=4, max_wait_s=0, max_queued=64)

    def broken(batch: np.ndarray) -> np.ndarray:
        raise ValueError("bad weights")

    token = tracing.begin(tracing.RequestTrace("r1", tracing.tracer_of(provider)))
    try:
        with pytest.raises(ValueError, match="bad weights"):
            await batcher.submit(broken, np.zeros((1, 2), np.float32))
    finally:
        tracing.end(token)
        batcher.close()
    call = one_named(exporter.get_finished_spans(), tracing.MODEL_CALL_SPAN)
    assert not call.status.is_ok
    assert call.events[0].name == "exception"
