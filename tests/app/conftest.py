"""App fixtures: an httpx client on the ASGI app with its lifespan running."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.app.model_files import copy_models

AppClientFactory = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@contextlib.asynccontextmanager
async def running_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the lifespan (model loading, batchers) around an in-process httpx client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://cellsign") as client:
            yield client


def settings_for(model_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: no background polling unless a test asks for it."""
    defaults: dict[str, Any] = {"reload_interval_s": 0, "device": "cpu"}
    return Settings(model_dir=model_dir, **{**defaults, **overrides})


@pytest.fixture
def model_dir(quick_models: Path, tmp_path: Path) -> Path:
    """A private copy of the trained models that a test may add versions to or break."""
    return copy_models(quick_models, tmp_path / "models")


@pytest.fixture
def make_client() -> AppClientFactory:
    """``async with make_client(model_dir, API_KEY=...)`` -> a client on a fresh app."""

    def factory(model_dir: Path, **overrides: Any) -> Any:
        return running_client(create_app(settings_for(model_dir, **overrides)))

    return factory


@pytest.fixture(scope="module")
async def client(quick_models: Path) -> AsyncIterator[httpx.AsyncClient]:
    """One app on the shared trained models, for tests that only read."""
    async with running_client(create_app(settings_for(quick_models))) as shared_client:
        yield shared_client
