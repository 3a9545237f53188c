"""Start-up with missing, corrupt or mismatched models: alive, not ready, and saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.registry import ModelRegistry
from tests.app.helpers import AppClientFactory
from tests.app.model_files import corrupt_saved_model, edit_metadata, rebuild_index_with_dimension

pytestmark = pytest.mark.anyio


async def test_empty_model_dir_is_alive_but_not_ready(
    make_client: AppClientFactory, tmp_path: Path
) -> None:
    async with make_client(tmp_path / "nothing-here") as client:
        assert (await client.get("/healthz")).status_code == 200
        response = await client.get("/readyz")
        assert response.status_code == 503
        detail = response.json()["detail"]
        for name in ("signs_classifier", "malaria_autoencoder", "malaria_index"):
            assert f"{name}: no version folder" in detail


async def test_corrupt_model_is_named_by_readyz(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    corrupt_saved_model(model_dir / "signs_classifier" / "1")
    async with make_client(model_dir) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert "signs_classifier: version 1 refused: " in response.json()["detail"]
        assert "cannot load SavedModel" in response.json()["detail"]
        assert (await client.get("/healthz")).status_code == 200
        denoise = await client.post("/denoise", files={"file": ("x.png", b"")})
        assert denoise.status_code == 400  # the other models still serve


async def test_missing_metadata_is_named_by_readyz(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    (model_dir / "malaria_autoencoder" / "1" / "metadata.json").unlink()
    async with make_client(model_dir) as client:
        detail = (await client.get("/readyz")).json()["detail"]
        assert "metadata.json is missing" in detail


async def test_index_dimension_mismatch_is_refused_at_start_up(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    rebuild_index_with_dimension(model_dir / "malaria_index" / "1", 7)
    async with make_client(model_dir) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert "index dimension 7 does not match" in response.json()["detail"]
        similar = await client.post("/similar", files={"file": ("x.png", b"x")})
        assert similar.status_code == 503


async def test_index_metadata_dimension_must_match_its_index(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    edit_metadata(model_dir / "malaria_index" / "1", dimension=3)
    async with make_client(model_dir) as client:
        assert "metadata dimension 3" in (await client.get("/readyz")).json()["detail"]


async def test_an_unexpected_loading_error_still_leaves_the_process_up(
    make_client: AppClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(registry: ModelRegistry) -> list[str]:
        raise PermissionError(f"{registry.model_dir}: permission denied")

    monkeypatch.setattr(ModelRegistry, "reload", unreadable)
    async with make_client(tmp_path) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
