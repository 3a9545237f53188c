"""Helpers the app tests share: settings for tests, an in-process client, server logs."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from app.settings import Settings
from benchmarks.servers import UvicornServer

BATCH_WAIT_MS = 3000  # the uvicorn fixture's batch wait: long enough to SIGTERM a request

AppClientFactory = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@contextlib.asynccontextmanager
async def running_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the lifespan (model loading, batchers) around an in-process httpx client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://cellsign") as client:
            yield client


def settings_for(model_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: no background polling unless a test asks for it, and a gallery
    of the app's own in a fresh temporary folder unless the test names one (the default,
    gallery/ in the working directory, would be the repository, shared by every app)."""
    defaults: dict[str, Any] = {
        "reload_interval_s": 0,
        "device": "cpu",
        "gallery_dir": Path(tempfile.mkdtemp(prefix="cellsign-gallery-")),
    }
    return Settings(model_dir=model_dir, **{**defaults, **overrides})


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


def python_output(script: str, timeout_s: float = 300) -> str:
    """Run ``script`` in a fresh interpreter (no TensorFlow runtime started, nothing imported
    yet); its standard output, once it has exited cleanly."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
