"""Hot reload through the API: new versions swap in, broken ones are refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.app.helpers import AppClientFactory
from tests.app.model_files import clone_version, corrupt_saved_model, rebuild_index_with_dimension
from tests.app.samples import image_bytes

pytestmark = pytest.mark.anyio

FILES = {"file": ("x.png", image_bytes())}


async def classifier_version(client: httpx.AsyncClient) -> int:
    response = await client.post("/classify", files=FILES)
    assert response.status_code == 200
    return response.json()["model"]["version"]


async def test_admin_reload_swaps_in_a_new_version(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    async with make_client(model_dir) as client:
        assert await classifier_version(client) == 1
        clone_version(model_dir, "signs_classifier", 1, 2)
        reloaded = (await client.post("/admin/reload")).json()
        assert reloaded["changes"] == ["signs_classifier 1 -> 2"]
        assert await classifier_version(client) == 2
        assert (
            'cellsign_model_version{model="signs_classifier"} 2.0'
            in (await client.get("/metrics")).text
        )


async def test_broken_version_is_refused_and_the_old_one_keeps_serving(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    async with make_client(model_dir) as client:
        corrupt_saved_model(clone_version(model_dir, "signs_classifier", 1, 2))
        rebuild_index_with_dimension(clone_version(model_dir, "malaria_index", 1, 2), 3)
        assert (await client.post("/admin/reload")).json()["changes"] == []
        assert await classifier_version(client) == 1
        similar = await client.post("/similar", files=FILES)
        assert similar.json()["index"]["version"] == 1
        refused = (await client.get("/models")).json()["refused"]
        assert refused["signs_classifier"][0]["version"] == 2
        assert "cannot load SavedModel" in refused["signs_classifier"][0]["reason"]
        assert "index dimension 3 does not match" in refused["malaria_index"][0]["reason"]
        assert (await client.get("/readyz")).status_code == 200


async def test_background_poll_picks_up_a_new_version(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    async with make_client(model_dir, reload_interval_s=0.2) as client:
        clone_version(model_dir, "malaria_autoencoder", 1, 2)
        for _ in range(200):  # up to about a minute on a loaded machine
            ready = (await client.get("/readyz")).json()
            if ready["models"]["malaria_autoencoder"] == 2:
                break
            await asyncio.sleep(0.3)
        assert ready["models"]["malaria_autoencoder"] == 2
        denoised = await client.post(
            "/denoise", files=FILES, headers={"Accept": "application/json"}
        )
        assert denoised.json()["model"]["version"] == 2


async def test_requests_in_flight_during_a_swap_all_succeed(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    async with make_client(model_dir) as client:
        clone_version(model_dir, "signs_classifier", 1, 2)
        requests = [client.post("/classify", files=FILES) for _ in range(8)]
        *responses, reload = await asyncio.gather(*requests, client.post("/admin/reload"))
        assert reload.json()["changes"] == ["signs_classifier 1 -> 2"]
        assert all(response.status_code == 200 for response in responses)
        assert {r.json()["model"]["version"] for r in responses} <= {1, 2}
