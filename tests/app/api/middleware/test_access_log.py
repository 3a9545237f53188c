"""One ``app.access`` record per request, with its ID, route, status, model and timings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from app.api.middleware.access_log import ACCESS_LOGGER
from app.main import create_app
from tests.app.helpers import AppClientFactory, running_client, settings_for
from tests.app.samples import image_bytes
from tests.app.spans import INCOMING_TRACE_ID, TRACEPARENT

pytestmark = pytest.mark.anyio


def _versioned() -> JSONResponse:
    return JSONResponse({"ok": True}, headers={"X-Model-Version": "signs_classifier=3"})


@pytest.fixture(scope="module")
async def logged(quick_models: Path) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings_for(quick_models))
    app.add_api_route("/versioned", _versioned)
    async with running_client(app) as client:
        yield client


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [record.fields for record in caplog.records if record.name == ACCESS_LOGGER.name]


async def request_logged(
    caplog: pytest.LogCaptureFixture, client: httpx.AsyncClient, method: str, path: str, **kwargs
) -> tuple[httpx.Response, dict]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER.name):
        response = await client.request(method, path, **kwargs)
    (fields,) = access_records(caplog)
    assert fields["request_id"] == response.headers["X-Request-ID"]
    assert (fields["method"], fields["status"]) == (method, response.status_code)
    assert fields["duration_ms"] > 0
    return response, fields


async def test_classify_logs_route_and_every_stage(
    caplog: pytest.LogCaptureFixture, logged: httpx.AsyncClient
) -> None:
    _, fields = await request_logged(
        caplog, logged, "POST", "/classify", files={"file": ("a.png", image_bytes("PNG"))}
    )
    assert (fields["endpoint"], fields["path"], fields["client"]) == (
        "/classify",
        "/classify",
        "127.0.0.1",
    )
    stages = ("read_ms", "decode_ms", "queue_ms", "model_ms", "encode_ms")  # one after another
    assert all(fields[stage] >= 0 for stage in stages)
    assert sum(fields[stage] for stage in stages) <= fields["duration_ms"]
    assert "trace_id" not in fields  # untraced and no traceparent


async def test_denoise_logs_its_png_encode(
    caplog: pytest.LogCaptureFixture, logged: httpx.AsyncClient
) -> None:
    _, fields = await request_logged(
        caplog, logged, "POST", "/denoise", files={"file": ("c.png", image_bytes("PNG"))}
    )
    assert fields["encode_ms"] > 0


async def test_route_template_model_version_and_caller_trace(
    caplog: pytest.LogCaptureFixture, logged: httpx.AsyncClient
) -> None:
    _, fields = await request_logged(caplog, logged, "GET", "/gallery/999999999.png")
    assert (fields["endpoint"], fields["path"], fields["status"]) == (
        "/gallery/{item_id}.png",
        "/gallery/999999999.png",
        404,
    )
    _, fields = await request_logged(caplog, logged, "GET", "/no/such/thing")
    assert fields["endpoint"] == "unmatched"
    _, fields = await request_logged(
        caplog, logged, "GET", "/versioned", headers={"traceparent": TRACEPARENT}
    )
    assert fields["model_version"] == "signs_classifier=3"
    assert fields["trace_id"] == INCOMING_TRACE_ID  # logged for correlation, even untraced


async def test_a_given_request_id_is_logged(
    caplog: pytest.LogCaptureFixture, logged: httpx.AsyncClient
) -> None:
    _, fields = await request_logged(
        caplog, logged, "GET", "/healthz", headers={"X-Request-ID": "from-the-caller"}
    )
    assert fields["request_id"] == "from-the-caller"


async def test_an_unhandled_error_is_logged_as_500_with_the_id(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    app: FastAPI = create_app(settings_for(tmp_path))
    app.add_api_route("/broken", broken)
    async with running_client(app) as client:
        response, fields = await request_logged(caplog, client, "GET", "/broken")
    assert fields["status"] == 500
    (traceback,) = [record for record in caplog.records if record.exc_info]
    assert traceback.fields == {"request_id": response.headers["X-Request-ID"]}


async def test_access_log_false_logs_nothing(
    caplog: pytest.LogCaptureFixture, make_client: AppClientFactory, tmp_path: Path
) -> None:
    async with make_client(tmp_path, access_log=False) as client:
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER.name):
            assert (await client.get("/healthz")).status_code == 200
    assert access_records(caplog) == []
