"""Shared fixtures: real models trained once per session with the project's own CLI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.paths import SHARED_DATA


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, like uvicorn."""
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def gallery_outside_the_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every server a test starts from this environment keeps its gallery in a temporary
    folder, not in gallery/ of the working directory (the repository)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GALLERY_DIR", str(tmp_path_factory.mktemp("gallery")))
        yield


@pytest.fixture(scope="session")
def quick_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with every model trained by ``python -m training all --quick``.

    ``QUICK_MODELS=DIR`` reuses such a folder instead (trained earlier with the same command),
    which saves the training when running a few tests by hand; CI always trains afresh.
    """
    if os.environ.get("QUICK_MODELS"):
        return Path(os.environ["QUICK_MODELS"])
    if not SHARED_DATA.is_dir():
        pytest.skip(f"training data not found at {SHARED_DATA}")
    from training.cli import main

    out = tmp_path_factory.mktemp("quick_models")
    exit_code = main(["all", "--quick", "--data", str(SHARED_DATA), "--out", str(out)])
    if exit_code != 0:
        pytest.fail(f"quick training failed with exit code {exit_code}")
    return out
