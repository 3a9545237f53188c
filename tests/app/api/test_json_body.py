"""``app.api.json_body``: JSON bodies FastAPI parses are bounded in size, depth and number
length, and each refusal is a 4xx naming its limit (never FastAPI's unexplained 400 or the
interpreter's own errors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.api.json_body import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    JSONBodyRoute,
    parse_json,
    too_deep,
)
from app.api.numbers import MAX_DIGITS
from app.main import create_app
from app.settings import Settings
from tests.app.helpers import AppClientFactory

pytestmark = pytest.mark.anyio

DEPTH_LIMIT = f"more than {MAX_JSON_DEPTH} deep"
DIGIT_LIMIT = f"more than {MAX_DIGITS} digits"


def nested(depth: int, inner: str = "1") -> bytes:
    return ("[" * depth + inner + "]" * depth).encode()


def refusal(body: bytes) -> HTTPException:
    with pytest.raises(HTTPException) as caught:
        parse_json(body)
    return caught.value


def test_nesting_up_to_the_limit_is_parsed() -> None:
    value: Any = parse_json(nested(MAX_JSON_DEPTH))
    for _ in range(MAX_JSON_DEPTH):
        (value,) = value
    assert value == 1
    assert parse_json(b'{"a": {"b": [1, 2, {"c": null}]}}') == {"a": {"b": [1, 2, {"c": None}]}}


@pytest.mark.parametrize(
    "body",
    [
        nested(MAX_JSON_DEPTH + 1),
        b"[" * MAX_JSON_BYTES,  # never closed: refused before the parser recurses
        b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1),
        b'["x", ' * 40 + b'"y"' + b"]" * 40,
    ],
    ids=["one-too-deep", "64KiB-of-brackets", "objects", "with-strings"],
)
def test_deeper_nesting_is_a_400_naming_the_limit(body: bytes) -> None:
    error = refusal(body)
    assert error.status_code == 400
    assert DEPTH_LIMIT in str(error.detail)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100,
        '\\"' + "{" * 100,  # an escaped quote does not end the string
        "\\\\",  # an escaped backslash does not escape the closing quote
    ],
)
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    body = json.dumps({"note": text, "more": [[text]]}).encode()
    assert not too_deep(body)
    assert parse_json(body)["note"] == text


def test_the_depth_scan_takes_escapes_and_unclosed_strings_in_its_stride() -> None:
    """A body of escaped quotes with no closing quote: every string match runs to the end,
    once (a backtracking pattern would try again from every quote)."""
    escapes = b'"' + b'\\"' * 30_000
    assert not too_deep(escapes + b"[" * 40)  # inside the string that never closes
    assert not too_deep(b"[" * 20 + escapes)
    assert too_deep(b"[" * 40 + escapes)
    with pytest.raises(json.JSONDecodeError):
        parse_json(b'{"a": "' + b'\\"' * 30_000)


def test_integers_are_bounded_in_length() -> None:
    largest = "9" * MAX_DIGITS
    assert parse_json(f'{{"version": {largest}, "low": -{largest}}}'.encode()) == {
        "version": int(largest),
        "low": -int(largest),
    }
    for digits in (MAX_DIGITS + 1, 5_000):
        error = refusal(b'{"version": ' + b"1" * digits + b"}")
        assert error.status_code == 400
        assert DIGIT_LIMIT in str(error.detail)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant: str) -> None:
    error = refusal(f'{{"canary_share": {constant}}}'.encode())
    assert error.status_code == 400
    assert constant in str(error.detail)


def test_a_body_over_the_size_limit_is_a_413() -> None:
    error = refusal(b" " * (MAX_JSON_BYTES + 1))
    assert error.status_code == 413
    assert str(MAX_JSON_BYTES) in str(error.detail)


def test_malformed_json_is_left_to_fastapi() -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_json(b'{"version": }')


class Body(BaseModel):
    version: int


def bounded_app() -> FastAPI:
    router = APIRouter(route_class=JSONBodyRoute)

    @router.put("/items/{name}")
    async def put_item(name: str, body: Body) -> dict[str, Any]:
        return {"name": name, "version": body.version}

    app = FastAPI()
    app.include_router(router)
    return app


async def put(body: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=bounded_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        headers = {"Content-Type": "application/json"}
        return await client.put("/items/a", content=body, headers=headers)


async def test_a_route_of_the_class_parses_a_good_body() -> None:
    response = await put(b'{"version": 3}')
    assert response.status_code == 200
    assert response.json() == {"name": "a", "version": 3}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"[" * MAX_JSON_BYTES, 400, DEPTH_LIMIT),
        (nested(900, '{"version": 1}'), 400, DEPTH_LIMIT),
        (b'{"version": ' + b"1" * 5_000 + b"}", 400, DIGIT_LIMIT),
        (b'{"version": NaN}', 400, "NaN"),
        (b'{"version": ', 422, "JSON decode error"),
        (b'{"version": "x"}', 422, "valid integer"),
    ],
    ids=["64KiB-of-brackets", "900-deep", "5000-digits", "nan", "malformed", "wrong-type"],
)
async def test_a_route_of_the_class_refuses_with_a_4xx_naming_the_limit(
    body: bytes, status: int, fragment: str
) -> None:
    response = await put(body)
    assert response.status_code == status, response.text[:300]
    assert fragment in str(response.json()["detail"])


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every ``APIRoute`` in ``routes``, those of included routers too (FastAPI keeps an
    included router as one entry that holds the ``original_router``)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += api_routes(route.original_router.routes)
    return found


def json_body_routes(app: FastAPI) -> list[APIRoute]:
    """The routes whose body FastAPI parses as JSON (not a form; inference routes and the
    v2 protocol read their bodies themselves)."""
    return [
        route
        for route in api_routes(app.routes)
        if route.body_field is not None
        and type(route.body_field.field_info).__name__ not in ("Form", "File")
    ]


def test_every_json_body_route_of_the_service_is_bounded() -> None:
    routes = json_body_routes(create_app(Settings(model_dir=Path("unused"))))
    assert routes, "no JSON-body route found: the check would pass vacuously"
    assert [route.path for route in routes if not isinstance(route, JSONBodyRoute)] == []


async def test_the_admin_label_body_is_bounded(
    make_client: AppClientFactory, tmp_path: Path
) -> None:
    """64 KiB of ``[``, the most the body limit lets through to this route."""
    async with make_client(tmp_path) as client:
        response = await client.put(
            "/admin/models/signs_classifier/labels/stable",
            content=b"[" * MAX_JSON_BYTES,
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text[:300]
    assert DEPTH_LIMIT in response.json()["detail"]
