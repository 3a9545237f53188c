"""X-API-Key: admin endpoints by default, everything but the probes with API_KEY_SCOPE=all."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.app.helpers import AppClientFactory

pytestmark = pytest.mark.anyio

KEY = {"X-API-Key": "s3cret"}
WRONG = {"X-API-Key": "guess"}


async def test_without_api_key_setting_nothing_is_guarded(
    make_client: AppClientFactory, tmp_path: Path
) -> None:
    async with make_client(tmp_path) as client:
        assert (await client.post("/admin/reload")).status_code == 200


async def test_admin_scope_guards_only_admin(make_client: AppClientFactory, tmp_path: Path) -> None:
    async with make_client(tmp_path, api_key="s3cret") as client:
        for headers in ({}, WRONG):
            response = await client.post("/admin/reload", headers=headers)
            assert response.status_code == 401
            assert "X-API-Key" in response.json()["detail"]
        assert (await client.post("/admin/reload", headers=KEY)).status_code == 200
        assert (await client.get("/models")).status_code == 200


async def test_all_scope_guards_everything_but_the_probes(
    make_client: AppClientFactory, tmp_path: Path
) -> None:
    async with make_client(tmp_path, api_key="s3cret", api_key_scope="all") as client:
        for path in ("/models", "/metrics", "/gallery/1.png"):
            assert (await client.get(path)).status_code == 401
            assert (await client.get(path, headers=WRONG)).status_code == 401
        assert (await client.post("/classify")).status_code == 401
        assert (await client.get("/models", headers=KEY)).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503  # no models, but no 401


async def test_start_up_warns_what_is_open_only_without_a_key(
    make_client: AppClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.main"):
        async with make_client(tmp_path):
            pass
        async with make_client(tmp_path, api_key="s3cret"):
            pass
    warnings = [r.getMessage() for r in caplog.records if "API_KEY is not set" in r.getMessage()]
    assert len(warnings) == 1, warnings
    for path in ("/admin/reload", "/metrics", "/models"):
        assert path in warnings[0]
