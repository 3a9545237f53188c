"""CORS: off by default; configured origins may call from a browser, others are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.api.middleware.cors import ALLOWED_HEADERS
from app.settings import Settings
from tests.app.helpers import AppClientFactory

pytestmark = pytest.mark.anyio

PAGE = "https://page.example"
OTHER = "https://evil.example"


def preflight(origin: str, method: str = "POST", headers: str = "x-api-key, x-request-id") -> dict:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_off_by_default(make_client: AppClientFactory, tmp_path: Path) -> None:
    async with make_client(tmp_path) as client:
        response = await client.options("/classify", headers=preflight(PAGE))
        assert response.status_code == 405
        assert "access-control-allow-origin" not in response.headers
        simple = await client.get("/healthz", headers={"Origin": PAGE})
        assert "access-control-allow-origin" not in simple.headers


async def test_a_configured_origin_may_call(make_client: AppClientFactory, tmp_path: Path) -> None:
    async with make_client(tmp_path, cors_origins=[PAGE], api_key="k") as client:
        allowed = await client.options(
            "/classify", headers=preflight(PAGE, headers=", ".join(ALLOWED_HEADERS))
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == PAGE
        assert "POST" in allowed.headers["access-control-allow-methods"]
        for header in ("X-API-Key", "X-Request-ID", "X-Request-Timeout", "Content-Type"):
            assert header in allowed.headers["access-control-allow-headers"]
        assert "access-control-allow-credentials" not in allowed.headers
        # The real request: its answer (here a 401) is readable by the page, and so are the
        # request ID and the model version.
        response = await client.post("/admin/reload", headers={"Origin": PAGE})
        assert response.status_code == 401
        assert response.headers["access-control-allow-origin"] == PAGE
        exposed = response.headers["access-control-expose-headers"]
        assert "X-Request-ID" in exposed and "X-Model-Version" in exposed


async def test_other_origins_are_refused(make_client: AppClientFactory, tmp_path: Path) -> None:
    async with make_client(tmp_path, cors_origins=[PAGE]) as client:
        refused = await client.options("/classify", headers=preflight(OTHER))
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        body = refused.json()  # JSON like every other error, with the request ID
        assert body == {
            "detail": "Disallowed CORS origin",
            "request_id": refused.headers["X-Request-ID"],
        }
        odd_header = await client.options("/classify", headers=preflight(PAGE, headers="x-secret"))
        assert (odd_header.status_code, odd_header.json()["detail"]) == (
            400,
            "Disallowed CORS headers",
        )
        simple = await client.get("/healthz", headers={"Origin": OTHER})
        assert simple.status_code == 200
        assert "access-control-allow-origin" not in simple.headers


async def test_star_allows_any_origin(make_client: AppClientFactory, tmp_path: Path) -> None:
    async with make_client(tmp_path, cors_origins=["*"]) as client:
        response = await client.options("/classify", headers=preflight(OTHER))
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"


def test_origins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", f"{PAGE}, http://localhost:3000")
    assert Settings().cors_origins == [PAGE, "http://localhost:3000"]
    monkeypatch.setenv("CORS_ORIGINS", f'["{PAGE}"]')
    with pytest.raises(ValidationError):  # one form only: a comma-separated list
        Settings()
    monkeypatch.setenv("CORS_ORIGINS", "")
    assert Settings().cors_origins == []


@pytest.mark.parametrize("origin", [f"{PAGE}/", f"{PAGE}/app", "page.example", "ftp://x.example"])
def test_a_value_that_no_origin_matches_is_refused(origin: str) -> None:
    with pytest.raises(ValidationError, match="not an origin"):
        Settings(cors_origins=[origin])
