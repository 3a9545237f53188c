"""OOD scores and flags on every inference route, REJECT_OOD, and the drift histogram."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import pytest

from tests.app.helpers import AppClientFactory
from tests.app.trust_samples import (
    SIGNS_IMAGE,
    cell_png,
    drop_ood_block,
    noise_png,
    require_data,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _data() -> None:
    require_data()


async def thresholds(client: httpx.AsyncClient) -> dict[str, float]:
    described = (await client.get("/models")).json()["models"]
    return {model["name"]: model["ood"]["threshold"] for model in described}


def consistent(verdict: dict, threshold: float) -> bool:
    return verdict["in_distribution"] == (verdict["ood_score"] <= threshold)


async def test_classify_scores_every_image_and_flags_noise(client: httpx.AsyncClient) -> None:
    files = [("file", ("hand.jpg", SIGNS_IMAGE.read_bytes())), ("file", ("noise.png", noise_png()))]
    response = await client.post("/classify", files=files)
    assert response.status_code == 200
    hand, noise = response.json()["predictions"]
    threshold = (await thresholds(client))["signs_classifier"]
    for prediction in (hand, noise):
        assert isinstance(prediction["ood_score"], float)
        assert consistent(prediction, threshold)
    assert noise["in_distribution"] is False
    assert noise["ood_score"] > hand["ood_score"]


async def test_denoise_png_carries_the_verdict_in_headers(client: httpx.AsyncClient) -> None:
    threshold = (await thresholds(client))["malaria_autoencoder"]
    for upload, expected in ((cell_png(), None), (noise_png(48), "false")):
        response = await client.post("/denoise", files={"file": ("x.png", upload)})
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        score = float(response.headers["x-ood-score"])
        flag = response.headers["x-in-distribution"]
        assert flag == ("true" if score <= threshold else "false")
        if expected is not None:
            assert flag == expected


async def test_denoise_json_and_similar_carry_the_same_score(client: httpx.AsyncClient) -> None:
    upload = {"file": ("cell.png", cell_png())}
    denoised = await client.post("/denoise", files=upload, headers={"Accept": "application/json"})
    similar = await client.post("/similar", files=upload)
    assert denoised.status_code == similar.status_code == 200
    body, answer = denoised.json(), similar.json()
    assert base64.b64decode(body["image_base64"]).startswith(b"\x89PNG")
    # /similar scores with the encoder the index was built with: here the same version
    assert answer["model"]["version"] == body["model"]["version"]
    assert answer["ood_score"] == pytest.approx(body["ood_score"], rel=1e-3)
    assert answer["in_distribution"] == body["in_distribution"]


async def test_reject_ood_refuses_flagged_inputs_with_a_clear_422(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    async with make_client(model_dir, reject_ood=True) as strict:
        files = [
            ("file", ("hand.jpg", SIGNS_IMAGE.read_bytes())),
            ("file", ("noise.png", noise_png())),
        ]
        refused = await strict.post("/classify", files=files)
        assert refused.status_code == 422
        detail = refused.json()["detail"]
        assert detail.startswith("noise.png: does not look like SIGNS hand-gesture photos")
        assert "hand.jpg" not in detail
        for route in ("/denoise", "/similar"):
            answer = await strict.post(route, files={"file": ("static.png", noise_png(48))})
            assert answer.status_code == 422
            assert "does not look like blood-smear cell images" in answer.json()["detail"]


async def test_versions_without_an_ood_block_answer_as_before(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    drop_ood_block(model_dir / "signs_classifier" / "1")
    drop_ood_block(model_dir / "malaria_autoencoder" / "1")
    async with make_client(model_dir, reject_ood=True) as old:
        (prediction,) = (
            await old.post("/classify", files={"file": ("n.png", noise_png())})
        ).json()["predictions"]
        assert prediction["ood_score"] is None and prediction["in_distribution"] is None
        denoised = await old.post("/denoise", files={"file": ("n.png", noise_png(48))})
        assert denoised.status_code == 200
        assert "x-ood-score" not in denoised.headers
        similar = (await old.post("/similar", files={"file": ("n.png", noise_png(48))})).json()
        assert similar["ood_score"] is None


def ood_counts(metrics_text: str, model: str) -> tuple[float, float]:
    """(observations at or below ratio 1.0, all observations) of one model's histogram."""

    def value(pattern: str) -> float:
        match = re.search(pattern, metrics_text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    below = value(rf'^cellsign_ood_score_ratio_bucket{{le="1.0",model="{model}"}} (\S+)$')
    total = value(rf'^cellsign_ood_score_ratio_count{{model="{model}"}} (\S+)$')
    return below, total


async def test_scores_feed_the_per_model_drift_histogram(client: httpx.AsyncClient) -> None:
    before = ood_counts((await client.get("/metrics")).text, "signs_classifier")
    files = [("file", (f"noise{i}.png", noise_png(seed=i))) for i in range(3)]
    predictions = (await client.post("/classify", files=files)).json()["predictions"]
    after = ood_counts((await client.get("/metrics")).text, "signs_classifier")
    assert after[1] - before[1] == 3
    in_distribution = sum(p["in_distribution"] for p in predictions)
    assert after[0] - before[0] == in_distribution
