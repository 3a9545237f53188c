"""Every endpoint through httpx on the ASGI app, with the models trained by the CLI."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from tests.app.samples import image_bytes
from tests.paths import SHARED_DATA

pytestmark = pytest.mark.anyio

SIGNS_IMAGE = SHARED_DATA / "signs" / "train" / "0_IMG_5864.jpg"


def upload(data: bytes, filename: str = "cell.png") -> dict:
    return {"file": (filename, data)}


async def test_healthz_and_readyz_when_everything_loaded(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == {
        "signs_classifier": 1,
        "malaria_autoencoder": 1,
        "malaria_index": 1,
    }


async def test_classify_one_real_sign(client: httpx.AsyncClient) -> None:
    response = await client.post("/classify", files=upload(SIGNS_IMAGE.read_bytes(), "hand.jpg"))
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "signs_classifier", "version": 1}
    (prediction,) = body["predictions"]
    assert prediction["filename"] == "hand.jpg"
    probabilities = prediction["probabilities"]
    assert sorted(probabilities) == [str(digit) for digit in range(6)]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert prediction["label"] == max(probabilities, key=probabilities.get)
    assert prediction["confidence"] == probabilities[prediction["label"]]
    assert prediction["class_id"] == int(prediction["label"])


async def test_classify_several_files_answers_in_upload_order(client: httpx.AsyncClient) -> None:
    files = [
        ("file", ("a.png", image_bytes("PNG"))),
        ("file", ("b.gif", image_bytes("GIF", size=(200, 100)))),
        ("file", ("c.jpg", SIGNS_IMAGE.read_bytes())),
    ]
    response = await client.post("/classify", files=files)
    assert response.status_code == 200
    assert [p["filename"] for p in response.json()["predictions"]] == ["a.png", "b.gif", "c.jpg"]


async def test_denoise_returns_a_png_at_the_model_input_size(client: httpx.AsyncClient) -> None:
    models = (await client.get("/models")).json()["models"]
    height, width, _ = next(m for m in models if m["name"] == "malaria_autoencoder")["input_shape"]
    response = await client.post("/denoise", files=upload(image_bytes("PNG", size=(50, 50))))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert (image.size, image.mode) == ((width, height), "RGB")


async def test_denoise_original_size_and_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/denoise",
        params={"size": "original"},
        files=upload(image_bytes("JPEG", size=(120, 90))),
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"]["name"] == "malaria_autoencoder"
    assert (body["width"], body["height"]) == (120, 90)
    assert Image.open(io.BytesIO(base64.b64decode(body["image_base64"]))).size == (120, 90)


async def test_denoise_original_size_is_capped_at_the_aspect_ratio(
    client: httpx.AsyncClient,
) -> None:
    """A 3000x1500 upload comes back at 1024x512 (DENOISE_MAX_SIDE), not 4.5 MP of PNG."""
    response = await client.post(
        "/denoise",
        params={"size": "original"},
        files=upload(image_bytes("JPEG", size=(3000, 1500))),
    )
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (1024, 512)


async def test_similar_returns_k_neighbours_whose_images_can_be_fetched(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/similar", params={"k": 3}, files=upload(image_bytes()))
    assert response.status_code == 200
    body = response.json()
    assert len(body["results"]) == 3
    distances = [result["distance"] for result in body["results"]]
    assert distances == sorted(distances)
    assert body["index"]["version"] == 1 and body["index"]["size"] > 3
    assert body["model"] == {"name": "malaria_autoencoder", "version": 1}
    first = body["results"][0]
    image = await client.get(first["image_url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).format == "PNG"


async def test_similar_defaults_to_default_k(client: httpx.AsyncClient) -> None:
    response = await client.post("/similar", files=upload(image_bytes()))
    assert len(response.json()["results"]) == 5


async def test_models_reports_versions_shapes_metrics_and_device(
    client: httpx.AsyncClient,
) -> None:
    body = (await client.get("/models")).json()
    assert body["device"] == "CPU:0"
    by_name = {model["name"]: model for model in body["models"]}
    assert by_name["signs_classifier"]["input_shape"] == [64, 64, 3]
    assert "test_accuracy" in by_name["signs_classifier"]["metrics"]
    assert by_name["malaria_autoencoder"]["code_dim"] == body["index"]["dimension"]
    assert body["missing"] == {} and body["refused"] == {}


async def test_metrics_count_requests_and_batches_and_show_versions(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/classify", files=upload(image_bytes()))
    text = (await client.get("/metrics")).text
    assert 'cellsign_requests_total{endpoint="/classify",method="POST",status="200"}' in text
    assert 'cellsign_request_duration_seconds_count{endpoint="/classify",method="POST"}' in text
    assert 'cellsign_batch_size_count{batcher="classify"}' in text
    assert 'cellsign_model_version{model="signs_classifier"} 1.0' in text


async def test_openapi_documents_every_endpoint_with_examples(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in ("/classify", "/denoise", "/similar", "/gallery/{item_id}.png", "/models"):
        assert path in schema["paths"]
    assert "image/png" in schema["paths"]["/denoise"]["post"]["responses"]["200"]["content"]
    assert schema["components"]["schemas"]["Prediction"]["properties"]["label"]["examples"]


async def test_web_page_is_served_when_installed(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
