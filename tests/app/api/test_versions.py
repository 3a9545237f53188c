"""Pinned and labelled versions across hot reloads, rollback, X-Model-Version, readiness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from app.core.registry import AUTOENCODER, CLASSIFIER, INDEX
from tests.app.helpers import AppClientFactory
from tests.app.model_files import clone_version
from tests.app.samples import image_bytes

pytestmark = pytest.mark.anyio

FILES = {"file": ("x.png", image_bytes())}


async def classify(client: httpx.AsyncClient, **params: object) -> httpx.Response:
    return await client.post("/classify", files=FILES, params=params)


async def served_version(client: httpx.AsyncClient, **params: object) -> int:
    response = await classify(client, **params)
    assert response.status_code == 200, response.text
    header = int(response.headers["X-Model-Version"])
    assert header == response.json()["model"]["version"]
    return header


MALFORMED_PINS = [
    ({"version": "0"}, ["query", "version"]),
    ({"version": "two"}, ["query", "version"]),
    ({"version": "-1"}, ["query", "version"]),
    ({"label": "x" * 33}, ["query", "label"]),
]


async def test_a_malformed_version_or_label_is_a_422_naming_it(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    async with make_client(model_dir) as client:
        for params, where in MALFORMED_PINS:
            response = await classify(client, **params)
            assert response.status_code == 422, params
            assert [error["loc"] for error in response.json()["detail"]] == [where]
        assert await served_version(client, version="1") == 1  # the smallest valid one


async def test_pinned_versions_across_hot_reloads(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    async with make_client(model_dir, model_versions_kept=2) as client:
        clone_version(model_dir, CLASSIFIER, 1, 2)
        assert (await client.post("/admin/reload")).json()["changes"] == [f"{CLASSIFIER} 1 -> 2"]
        assert await served_version(client) == 2
        assert await served_version(client, version=1) == 1  # the older one is still loaded
        clone_version(model_dir, CLASSIFIER, 1, 3)
        changes = (await client.post("/admin/reload")).json()["changes"]
        assert changes == [f"{CLASSIFIER} 2 -> 3", f"{CLASSIFIER} -1"]  # two kept: 3 and 2
        assert await served_version(client, version=2) == 2
        gone = await classify(client, version=1)
        assert gone.status_code == 404
        assert gone.json()["detail"] == f"{CLASSIFIER} version 1 is not loaded (loaded: 3, 2)"
        both = await classify(client, version=2, label="stable")
        assert both.status_code == 422
        versions = (await client.get("/models")).json()["versions"][CLASSIFIER]
        assert versions == {
            "loaded": [3, 2],
            "default": 3,
            "labels": {},
            "canary_share": 0.0,
            "labels_problem": None,
        }


async def test_labels_pin_and_survive_reloads_and_restarts(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    clone_version(model_dir, CLASSIFIER, 1, 2)
    async with make_client(model_dir, model_versions_kept=1) as client:
        assert (await client.get("/models")).json()["versions"][CLASSIFIER]["loaded"] == [2]
        put = await client.put(f"/admin/models/{CLASSIFIER}/labels/stable", json={"version": 1})
        assert put.status_code == 200, put.text
        assert put.json()["persisted"] is True
        assert put.json()["versions"]["loaded"] == [2, 1]  # loaded for the label
        assert await served_version(client) == 1  # stable is the default
        assert await served_version(client, label="stable") == 1
        clone_version(model_dir, CLASSIFIER, 1, 3)
        await client.post("/admin/reload")
        assert await served_version(client) == 1  # a newer version does not displace stable
        assert await served_version(client, version=3) == 3
        unknown = await classify(client, label="nightly")
        assert unknown.status_code == 404
        assert "no label 'nightly'" in unknown.json()["detail"]
    labels_file = model_dir / CLASSIFIER / "labels.json"
    assert json.loads(labels_file.read_text())["labels"] == {"stable": 1}
    async with make_client(model_dir, model_versions_kept=1) as client:
        assert await served_version(client) == 1  # the label outlived the restart
        removed = await client.delete(f"/admin/models/{CLASSIFIER}/labels/stable")
        assert removed.json()["versions"]["loaded"] == [3]  # 1 was kept only for the label
        assert await served_version(client) == 3


async def test_canary_takes_its_share_of_unpinned_requests(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    clone_version(model_dir, CLASSIFIER, 1, 2)
    async with make_client(model_dir) as client:
        stable = await client.put(f"/admin/models/{CLASSIFIER}/labels/stable", json={"version": 1})
        assert stable.status_code == 200
        path = f"/admin/models/{CLASSIFIER}/labels/canary"
        await client.put(path, json={"version": 2, "canary_share": 1.0})
        assert {await served_version(client) for _ in range(4)} == {2}
        assert await served_version(client, label="stable") == 1  # a pin skips the canary
        await client.put(path, json={"version": 2, "canary_share": 0.0})
        assert {await served_version(client) for _ in range(4)} == {1}
        wrong = await client.put(
            f"/admin/models/{CLASSIFIER}/labels/stable", json={"version": 2, "canary_share": 0.5}
        )
        assert wrong.status_code == 409
        missing = await client.put(path, json={"version": 7})
        assert missing.status_code == 404
        assert "version 7 cannot be loaded" in missing.json()["detail"]
        bad_name = await client.put(f"/admin/models/{CLASSIFIER}/labels/Bad!", json={"version": 1})
        assert bad_name.status_code == 422


async def test_rollback_returns_to_the_previous_version_and_stays(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    async with make_client(model_dir, reload_interval_s=0.05) as client:
        one_version = await client.post(f"/admin/rollback/{CLASSIFIER}")
        assert one_version.status_code == 409
        assert "no version older than 1" in one_version.json()["detail"]
        clone_version(model_dir, CLASSIFIER, 1, 2)
        await client.post("/admin/reload")
        assert await served_version(client) == 2
        rolled = await client.post(f"/admin/rollback/{CLASSIFIER}")
        assert rolled.status_code == 200
        assert rolled.json()["rolled_back_from"] == 2 and rolled.json()["serving"] == 1
        assert rolled.json()["versions"]["labels"] == {"stable": 1}
        await client.post("/admin/reload")
        for _ in range(5):  # polls run meanwhile: none re-promotes version 2
            assert await served_version(client) == 1
        assert await served_version(client, version=2) == 2  # still loaded for a pinned client
        await client.delete(f"/admin/models/{CLASSIFIER}/labels/stable")  # roll forward
        assert await served_version(client) == 2


async def test_admin_version_calls_need_the_api_key(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    async with make_client(model_dir, api_key="secret") as client:
        calls = [
            client.put(f"/admin/models/{CLASSIFIER}/labels/stable", json={"version": 1}),
            client.delete(f"/admin/models/{CLASSIFIER}/labels/stable"),
            client.post(f"/admin/rollback/{CLASSIFIER}"),
        ]
        for call in calls:
            assert (await call).status_code == 401
        keyed = await client.put(
            f"/admin/models/{CLASSIFIER}/labels/stable",
            json={"version": 1},
            headers={"X-API-Key": "secret"},
        )
        assert keyed.status_code == 200


async def test_a_labels_file_edited_by_hand_applies_at_the_next_reload(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    clone_version(model_dir, CLASSIFIER, 1, 2)
    labels_file = model_dir / CLASSIFIER / "labels.json"
    async with make_client(model_dir) as client:
        labels_file.write_text(json.dumps({"labels": {"stable": 1}}))
        await client.post("/admin/reload")
        assert await served_version(client) == 1
        labels_file.write_text(json.dumps({"labels": {"stable": "one"}}))
        await client.post("/admin/reload")
        assert await served_version(client) == 1  # a flawed file leaves the labels in use
        versions = (await client.get("/models")).json()["versions"][CLASSIFIER]
        assert "version must be a positive integer" in versions["labels_problem"]


async def test_every_inference_response_names_its_version(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    clone_version(model_dir, INDEX, 1, 2)
    async with make_client(model_dir) as client:
        denoised = await client.post("/denoise", files=FILES)
        assert denoised.headers["X-Model-Version"] == "1"
        similar = await client.post("/similar", files=FILES)
        # The gallery's codes (seeded from index 2, built with encoder 1) and their encoder.
        assert similar.headers["X-Model-Version"] == "1"
        assert similar.headers["X-Index-Version"] == "1"
        url = similar.json()["results"][0]["image_url"]
        assert url.endswith(".png") and "?" not in url
        gallery = await client.get(url)
        assert gallery.status_code == 200 and gallery.headers["X-Index-Version"] == "1"
        # ?version= pins nothing on /similar: it may only name the codes searched now.
        pinned = await client.post("/similar", files=FILES, params={"version": 1})
        assert pinned.headers["X-Index-Version"] == "1"
        other = await client.post("/similar", files=FILES, params={"version": 2})
        assert other.status_code == 404 and "version 1, not 2" in other.json()["detail"]
        assert (
            await client.post("/denoise", files=FILES, params={"version": 5})
        ).status_code == 404


async def test_a_missing_model_answers_503_while_the_others_serve(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    shutil.rmtree(model_dir / AUTOENCODER)
    async with make_client(model_dir) as client:
        assert (await classify(client)).status_code == 200
        denoised = await client.post("/denoise", files=FILES)
        assert denoised.status_code == 503
        assert denoised.json()["detail"].startswith(f"{AUTOENCODER} is not loaded: no version")
        assert (await client.post("/similar", files=FILES)).status_code == 503
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        components = ready.json()["components"]
        assert components[CLASSIFIER] == {
            "ready": True,
            "version": 1,
            "loaded": [1],
            "reason": None,
        }
        assert components[AUTOENCODER]["ready"] is False
        assert "no version folder" in components[AUTOENCODER]["reason"]
        assert components[INDEX]["ready"] is False
        v2_ready = await client.get(f"/v2/models/{AUTOENCODER}/ready")
        assert v2_ready.status_code == 503 and "not loaded" in v2_ready.json()["error"]
        assert (await client.get(f"/v2/models/{CLASSIFIER}/ready")).status_code == 200
