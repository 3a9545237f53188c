"""App fixtures: an httpx client on the ASGI app with its lifespan running, and a real uvicorn."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from benchmarks.servers import UvicornServer
from tests.app.model_files import copy_models

BATCH_WAIT_MS = 3000  # a request waits this long in the batcher: long enough to SIGTERM it

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


def logged_errors(log_path: Path) -> list[str]:
    """Python and uvicorn error records (``ERROR:...``) and tracebacks in a server's log:
    a lifespan shutdown that fails or raises shows up here."""
    lines = log_path.read_text().splitlines()
    return [line for line in lines if line.startswith(("ERROR:", "Traceback"))]


def started(server: UvicornServer) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The running server's process, base URL and log file."""
    if server.process is None:
        raise RuntimeError("the server fixture did not start uvicorn")
    return server.process, server.base_url, server.log_path
