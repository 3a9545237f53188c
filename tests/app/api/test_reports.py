"""GET /models/{name}/report and its files: the serving version's report, nothing else."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.app.helpers import AppClientFactory

pytestmark = pytest.mark.anyio

EXPECTED_PLOTS = {
    "signs_classifier": {
        "learning_curves.png",
        "confusion_matrix.png",
        "reliability_diagram.png",
        "ood_scores.png",
    },
    "malaria_autoencoder": {
        "learning_curves.png",
        "denoising_grid.png",
        "denoising_levels.png",
        "reconstructions.png",
        "code_map.png",
        "ood_scores.png",
    },
    "malaria_index": {"neighbours.png"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PLOTS))
async def test_listing_links_every_plot_and_serves_it_with_its_type(
    client: httpx.AsyncClient, name: str
) -> None:
    listing = await client.get(f"/models/{name}/report")
    assert listing.status_code == 200
    body = listing.json()
    assert body["name"] == name and body["version"] == 1
    files = {item["name"]: item for item in body["files"]}
    assert EXPECTED_PLOTS[name] <= set(files)
    assert "metrics.json" in files
    for item in files.values():
        served = await client.get(item["url"])
        assert served.status_code == 200
        assert served.headers["content-type"] == item["content_type"]
        assert len(served.content) == item["bytes"]
    png = await client.get(
        files["ood_scores.png" if name != "malaria_index" else "neighbours.png"]["url"]
    )
    assert png.content.startswith(b"\x89PNG")


async def test_listing_carries_the_metrics_ood_and_calibration(client: httpx.AsyncClient) -> None:
    body = (await client.get("/models/signs_classifier/report")).json()
    assert 0 <= body["metrics"]["test_accuracy"] <= 1
    assert body["calibration"]["temperature"] > 0
    assert body["calibration"]["ece_bins"] == 15
    assert 0 <= body["ood"]["auroc"] <= 1
    assert body["ood"]["score"] == "conv_feature_mahalanobis"
    cells = (await client.get("/models/malaria_autoencoder/report")).json()
    assert cells["calibration"] is None
    assert cells["ood"]["signatures"] == ["denoise", "encode", "serving_default"]


@pytest.mark.parametrize(
    "path",
    [
        "/models/nonexistent/report",
        "/models/signs_classifier/report/nonexistent.png",
        "/models/signs_classifier/report/..%2Fmetadata.json",
        "/models/signs_classifier/report/%2E%2E%2Fmetadata.json",
        "/models/signs_classifier/report/tensorboard",
        "/models/malaria_autoencoder/report/config.json%00.png",
    ],
)
async def test_unknown_names_and_path_tricks_get_a_json_404(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert "detail" in response.json()


async def test_a_symlink_in_the_report_folder_is_neither_listed_nor_served(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    report = model_dir / "signs_classifier" / "1" / "report"
    (report / "leak.json").symlink_to(Path("/etc/passwd"))
    async with make_client(model_dir) as local:
        names = [
            f["name"] for f in (await local.get("/models/signs_classifier/report")).json()["files"]
        ]
        assert "leak.json" not in names
        assert (await local.get("/models/signs_classifier/report/leak.json")).status_code == 404


async def test_a_model_that_is_not_loaded_gets_a_503(
    make_client: AppClientFactory, tmp_path: Path
) -> None:
    async with make_client(tmp_path / "empty") as empty:
        response = await empty.get("/models/signs_classifier/report")
        assert response.status_code == 503
        assert "signs_classifier is not loaded" in response.json()["detail"]
