"""``InferenceRoute``: the endpoint runs without FastAPI's request handling, and the form it
parsed is closed afterwards (its parts may be spooled to temporary files)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from app.api.inference import InferenceRoute

pytestmark = pytest.mark.anyio


def app_with(endpoint: Any) -> FastAPI:
    app = FastAPI()
    app.router.routes.append(InferenceRoute("/infer", endpoint, methods=["POST"]))
    return app


@pytest.mark.parametrize("fails", [False, True])
async def test_the_form_is_closed_after_the_endpoint_answers_or_fails(fails: bool) -> None:
    parts: list[Any] = []

    async def endpoint(request: Request) -> Response:
        parts.extend((await request.form()).getlist("file"))
        if fails:
            raise ValueError("the endpoint failed")
        return Response("ok")

    transport = httpx.ASGITransport(app=app_with(endpoint), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        files = [("file", ("a.png", b"a" * 10)), ("file", ("b.png", b"b" * 2_000_000))]
        response = await client.post("/infer", files=files)
    assert response.status_code == (500 if fails else 200)
    assert len(parts) == 2
    assert all(part.file.closed for part in parts)


async def test_the_endpoint_gets_the_request_and_its_path_parameters() -> None:
    async def endpoint(request: Request) -> Response:
        return Response(f"{request.method} {request.path_params}")

    app = FastAPI()
    app.router.routes.append(InferenceRoute("/models/{name}", endpoint, methods=["POST"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/models/signs")
    assert response.text == "POST {'name': 'signs'}"
