"""App fixtures: an httpx client on the ASGI app with its lifespan running, and a real uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from benchmarks.servers import UvicornServer
from tests.app.helpers import BATCH_WAIT_MS, AppClientFactory, running_client, settings_for
from tests.app.model_files import copy_models


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


@pytest.fixture
def uvicorn_server(quick_models: Path, tmp_path: Path) -> Iterator[UvicornServer]:
    """``uvicorn app.main:app`` on 127.0.0.1 with the quick models, once /readyz says 200.

    Every request waits ``BATCH_WAIT_MS`` in its micro-batcher, so a test can catch it there.
    The log (uvicorn at warning level) is ``uvicorn_server.log_path``.
    """
    env = {
        "MODEL_DIR": str(quick_models),
        "DEVICE": "cpu",
        "RELOAD_INTERVAL_S": "0",
        "BATCH_MAX_WAIT_MS": str(BATCH_WAIT_MS),
        "REQUEST_TIMEOUT_S": "60",  # waiting in the batch is the point: not shed meanwhile
    }
    with UvicornServer("app.main:app", env, tmp_path / "uvicorn.log", "/readyz") as server:
        yield server
