"""The HTTP client and CLI: request shapes and error handling against a mock transport,
then the same calls against the real app (quick models) through FastAPI's TestClient."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.client import CellsignClient, CellsignError, main
from app.main import create_app
from tests.app.helpers import settings_for
from tests.app.samples import image_bytes

Handler = Callable[[httpx.Request], httpx.Response]
CLASSIFY_ANSWER = {
    "model": {"name": "signs_classifier", "version": 1},
    "predictions": [
        {
            "filename": "a.png",
            "label": "3",
            "class_id": 3,
            "confidence": 0.9,
            "probabilities": {"3": 0.9, "1": 0.1},
        }
    ],
}


def mock_http(handler: Handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    path.write_bytes(b"\x89PNG not really")
    return path


def test_classify_sends_every_file_as_a_file_part_with_the_api_key(
    image_file: Path, tmp_path: Path
) -> None:
    second = tmp_path / "b.jpg"
    second.write_bytes(b"jpeg bytes")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=CLASSIFY_ANSWER)

    client = CellsignClient("http://server:9", api_key="secret", http_client=mock_http(handler))
    assert client.classify([image_file, second]) == CLASSIFY_ANSWER
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == "http://server:9/classify"
    assert request.headers["X-API-Key"] == "secret"
    body = request.read()
    assert b'name="file"; filename="a.png"' in body
    assert b'name="file"; filename="b.jpg"' in body
    assert b"Content-Type: image/jpeg" in body


def test_denoise_asks_for_png_at_the_original_size(image_file: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/denoise"
        assert request.url.params["size"] == "original"
        assert request.headers["Accept"] == "image/png"
        return httpx.Response(200, content=b"png-bytes", headers={"content-type": "image/png"})

    client = CellsignClient(http_client=mock_http(handler))
    assert client.denoise(image_file, size_original=True) == b"png-bytes"


def test_similar_passes_k_and_rejects_k_below_one(image_file: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"results": [], "k": request.url.params["k"]})

    client = CellsignClient(http_client=mock_http(handler))
    assert client.similar(image_file, k=7)["k"] == "7"
    with pytest.raises(ValueError, match="k must be at least 1"):
        client.similar(image_file, k=0)


def test_classify_needs_a_path() -> None:
    client = CellsignClient(http_client=mock_http(lambda request: httpx.Response(500)))
    with pytest.raises(ValueError, match="at least one image"):
        client.classify([])


def test_an_error_answer_raises_with_the_server_detail(image_file: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(415, json={"detail": "cannot read image a.png"})

    client = CellsignClient(http_client=mock_http(handler))
    with pytest.raises(CellsignError, match="HTTP 415: cannot read image a.png") as raised:
        client.classify([image_file])
    assert raised.value.status_code == 415


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            httpx.Response(400, json={"detail": "image is\n  empty"}),
            "error: HTTP 400: image is empty",
        ),
        (
            httpx.Response(
                422,
                json={"detail": [{"loc": ["query", "k"], "msg": "must be <= 100"}]},
            ),
            "error: HTTP 422: query.k: must be <= 100",
        ),
        (
            httpx.Response(502, text="<html> Bad gateway </html>"),
            "error: HTTP 502: <html> Bad gateway </html>",
        ),
    ],
)
def test_cli_prints_the_detail_as_one_line_and_fails(
    image_file: Path,
    capsys: pytest.CaptureFixture[str],
    response: httpx.Response,
    expected: str,
) -> None:
    status = main(["similar", str(image_file)], http_client=mock_http(lambda request: response))
    captured = capsys.readouterr()
    assert status == 1
    assert captured.err == expected + "\n"
    assert "Traceback" not in captured.err


def test_cli_reports_a_missing_file_without_calling_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    missing = tmp_path / "missing.png"
    status = main(["classify", str(missing)], http_client=mock_http(handler))
    assert status == 1
    assert capsys.readouterr().err == f"error: No such file or directory: {missing}\n"


def test_cli_reports_an_unreachable_server(
    image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    status = main(["--url", "http://127.0.0.1:1", "classify", str(image_file)], mock_http(handler))
    assert status == 1
    assert capsys.readouterr().err == "error: cannot reach http://127.0.0.1:1: Connection refused\n"


def test_cli_rejects_k_below_one_before_any_request(
    image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["similar", str(image_file), "-k", "0"])
    assert raised.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_cli_classify_prints_one_line_per_image(
    image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    http = mock_http(lambda request: httpx.Response(200, json=CLASSIFY_ANSWER))
    assert main(["classify", str(image_file)], http) == 0
    assert capsys.readouterr().out == "a.png: 3 (confidence 0.900)\n"


def test_cli_denoise_writes_the_png(image_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.png"
    http = mock_http(lambda request: httpx.Response(200, content=b"png-bytes"))
    assert main(["denoise", str(image_file), "-o", str(output)], http) == 0
    assert output.read_bytes() == b"png-bytes"


@pytest.fixture(scope="module")
def app_http(quick_models: Path) -> Iterator[TestClient]:
    """An ``httpx.Client`` on the real app, lifespan (model loading) included."""
    with TestClient(create_app(settings_for(quick_models))) as http:
        yield http


@pytest.fixture
def cell_png(tmp_path: Path) -> Path:
    path = tmp_path / "cell.png"
    path.write_bytes(image_bytes("PNG", size=(50, 40)))
    return path


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def test_real_app_classifies_several_images_in_one_request(
    app_http: TestClient, tmp_path: Path
) -> None:
    paths = [tmp_path / "one.jpg", tmp_path / "two.png"]
    paths[0].write_bytes(image_bytes("JPEG"))
    paths[1].write_bytes(image_bytes("PNG", size=(80, 80)))
    result = CellsignClient(http_client=app_http).classify(paths)
    assert result["model"]["name"] == "signs_classifier"
    assert [p["filename"] for p in result["predictions"]] == ["one.jpg", "two.png"]
    for prediction in result["predictions"]:
        probabilities = prediction["probabilities"]
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert prediction["label"] == max(probabilities, key=probabilities.get)


def test_real_app_denoises_at_model_or_original_size(app_http: TestClient, cell_png: Path) -> None:
    client = CellsignClient(http_client=app_http)
    assert png_size(client.denoise(cell_png, size_original=True)) == (50, 40)
    models = app_http.get("/models").json()["models"]
    autoencoder = next(model for model in models if model["name"] == "malaria_autoencoder")
    height, width, _ = autoencoder["input_shape"]
    assert png_size(client.denoise(cell_png)) == (width, height)


def test_real_app_similar_returns_k_nearest_with_their_images(
    app_http: TestClient, cell_png: Path
) -> None:
    client = CellsignClient(http_client=app_http)
    results = client.similar(cell_png, k=3)["results"]
    distances = [result["distance"] for result in results]
    assert len(results) == 3
    assert distances == sorted(distances)
    assert png_size(client.gallery_image(results[0]["image_url"]))[0] > 0


def test_raw_sends_the_bytes_as_the_body_one_image_per_request(image_file: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=CLASSIFY_ANSWER)

    client = CellsignClient("http://server:9", http_client=mock_http(handler), raw=True)
    assert client.classify([image_file]) == CLASSIFY_ANSWER
    assert seen[0].headers["content-type"] == "application/octet-stream"
    assert seen[0].content == image_file.read_bytes()
    with pytest.raises(ValueError, match="one image"):
        client.classify([image_file, image_file])
    assert len(seen) == 1


def test_real_app_answers_raw_and_multipart_alike(app_http: TestClient, cell_png: Path) -> None:
    by_form = CellsignClient(http_client=app_http)
    by_body = CellsignClient(http_client=app_http, raw=True)
    assert by_body.denoise(cell_png, size_original=True) == by_form.denoise(
        cell_png, size_original=True
    )
    assert by_body.similar(cell_png, k=2) == by_form.similar(cell_png, k=2)
    (raw_prediction,) = by_body.classify([cell_png])["predictions"]
    (form_prediction,) = by_form.classify([cell_png])["predictions"]
    assert raw_prediction["label"] == form_prediction["label"]


def test_cli_raw_with_several_images_is_one_line_error(
    app_http: TestClient, cell_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--raw", "classify", str(cell_png), str(cell_png)], http_client=app_http) == 1
    assert capsys.readouterr().err == (
        "error: a raw body carries one image: classify them one at a time\n"
    )
    assert main(["--raw", "classify", str(cell_png)], http_client=app_http) == 0
    assert capsys.readouterr().out.startswith("body: ")


def test_cli_on_the_real_app_prints_its_error_for_a_text_file(
    app_http: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    assert main(["classify", str(notes)], http_client=app_http) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: HTTP 415: ")
    assert error.count("\n") == 1


def test_cli_on_the_real_app_writes_a_denoised_png(
    app_http: TestClient, cell_png: Path, tmp_path: Path
) -> None:
    output = tmp_path / "denoised.png"
    status = main(
        ["denoise", str(cell_png), "-o", str(output), "--original-size"], http_client=app_http
    )
    assert status == 0
    assert png_size(output.read_bytes()) == (50, 40)


def test_the_api_key_reaches_a_server_that_requires_it(quick_models: Path, cell_png: Path) -> None:
    settings = settings_for(quick_models, api_key="letmein", api_key_scope="all")
    with TestClient(create_app(settings)) as http:
        with pytest.raises(CellsignError) as refused:
            CellsignClient(http_client=http).similar(cell_png, k=1)
        assert refused.value.status_code == 401
        answer = CellsignClient(api_key="letmein", http_client=http).similar(cell_png, k=1)
        assert len(answer["results"]) == 1
