"""Serving while a training run beside the server fills the models folder (scripts/serve.sh):
models already exported serve, the others answer 503 saying how far their training is, and
each one comes in with the next reload."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import anyio
import pytest

from contract.layout import AUTOENCODER, CLASSIFIER, INDEX
from contract.training_status import status_path, write_status
from tests.app.helpers import AppClientFactory
from tests.app.samples import image_bytes

pytestmark = pytest.mark.anyio

FILES = {"file": ("x.png", image_bytes())}


async def test_models_not_yet_trained_say_so_and_come_in_on_reload(
    make_client: AppClientFactory, model_dir: Path, tmp_path: Path
) -> None:
    parked = tmp_path / "parked"
    parked.mkdir()
    for name in (AUTOENCODER, INDEX):
        shutil.move(model_dir / name, parked / name)
    status = {
        "job": "malaria",
        "state": "training",
        "epoch": 2,
        "epochs": 8,
        "eta_s": 240.0,
        "pending": ["index"],
        "updated": time.time(),
    }
    write_status(status_path(model_dir), status)

    async with make_client(model_dir) as client:
        assert (await client.post("/classify", files=FILES)).status_code == 200
        denoise = await client.post("/denoise", files=FILES)
        assert denoise.status_code == 503
        assert "still training: malaria epoch 2/8, about 4 min left" in denoise.json()["detail"]
        similar = await client.post("/similar", files=FILES)
        assert similar.status_code == 503
        assert "waiting to be trained" in similar.json()["detail"]

        ready = await client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["training"]["job"] == "malaria"
        assert body["components"][CLASSIFIER]["ready"]
        assert "still training" in body["components"][AUTOENCODER]["reason"]

        for name in (AUTOENCODER, INDEX):
            shutil.move(parked / name, model_dir / name)
        write_status(status_path(model_dir), {**status, "state": "done", "pending": []})
        assert (await client.post("/admin/reload")).status_code == 200
        # The gallery is seeded from the index that just loaded, in the background.
        deadline = time.monotonic() + 60
        while (ready := await client.get("/readyz")).status_code != 200:
            assert "gallery" in ready.json()["detail"], ready.json()["detail"]
            assert time.monotonic() < deadline, ready.json()
            await anyio.sleep(0.05)
        assert (await client.post("/similar", files=FILES)).status_code == 200
        assert ready.json()["training"] is None
        assert (await client.post("/denoise", files=FILES)).status_code == 200
