"""The HTTP client and CLI: request shapes and error handling against a mock transport,
then the same calls against the real app (quick models) through FastAPI's TestClient."""

from __future__ import annotations

import io
import json
import re
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


def recording_http(status: int, answer: object) -> tuple[httpx.Client, list[httpx.Request]]:
    """A client whose every request is answered ``status`` with the JSON ``answer``, and the
    list it keeps the requests in: for tests of what the client sends."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=answer)

    return mock_http(handler), seen


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    path.write_bytes(b"\x89PNG not really")
    return path


@pytest.fixture
def second_file(tmp_path: Path) -> Path:
    """Another upload beside ``image_file``, a JPEG by its name: requests with files of two
    types."""
    path = tmp_path / "b.jpg"
    path.write_bytes(b"jpeg bytes")
    return path


def test_classify_sends_every_file_as_a_file_part_with_the_api_key(
    image_file: Path, second_file: Path
) -> None:
    http, seen = recording_http(200, CLASSIFY_ANSWER)
    client = CellsignClient("http://server:9", api_key="secret", http_client=http)
    assert client.classify([image_file, second_file]) == CLASSIFY_ANSWER
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
def app_http(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An ``httpx.Client`` on the real app, lifespan (model loading) included."""
    gallery_dir = tmp_path_factory.mktemp("gallery")
    with TestClient(create_app(settings_for(quick_models, gallery_dir=gallery_dir))) as http:
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
    http, seen = recording_http(200, CLASSIFY_ANSWER)
    client = CellsignClient("http://server:9", http_client=http, raw=True)
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


def test_the_api_key_reaches_a_server_that_requires_it(
    quick_models: Path, cell_png: Path, tmp_path: Path
) -> None:
    settings = settings_for(
        quick_models, api_key="letmein", api_key_scope="all", gallery_dir=tmp_path / "gallery"
    )
    with TestClient(create_app(settings)) as http:
        with pytest.raises(CellsignError) as refused:
            CellsignClient(http_client=http).similar(cell_png, k=1)
        assert refused.value.status_code == 401
        answer = CellsignClient(api_key="letmein", http_client=http).similar(cell_png, k=1)
        assert len(answer["results"]) == 1


# The gallery (issue #26): request shapes, output lines and argument errors, on a mock server.
def gallery_item(item_id: int, label: str = "parasitized", **extra: object) -> dict[str, object]:
    return {
        "id": item_id,
        "label": label,
        "note": "",
        "created": 1_700_000_000.0,
        "source": "added",
        "image_url": f"/gallery/{item_id}.png",
        **extra,
    }


def no_request(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url}")


def form_fields(request: httpx.Request) -> dict[str, list[str]]:
    """The multipart body's parts as name -> [filename or text value], in order."""
    content_type = request.headers["content-type"]
    boundary = content_type.split("boundary=")[1].encode()
    fields: dict[str, list[str]] = {}
    for part in request.read().split(b"--" + boundary)[1:-1]:
        head, _, value = part.strip(b"\r\n").partition(b"\r\n\r\n")
        disposition = head.decode().split("\r\n")[0]
        name = disposition.split('name="')[1].split('"')[0]
        if 'filename="' in disposition:
            fields.setdefault(name, []).append(disposition.split('filename="')[1].split('"')[0])
        else:
            fields.setdefault(name, []).append(value.decode())
    return fields


def test_gallery_add_sends_a_form_with_the_label_note_files_and_key(
    image_file: Path, second_file: Path
) -> None:
    answer = {"items": [gallery_item(5, created_now=True), gallery_item(9, created_now=False)]}
    http, seen = recording_http(201, answer)
    client = CellsignClient("http://server:9", "secret", http_client=http)
    files = [image_file, second_file]
    assert client.gallery_add(files, "parasitized", note="from slide 4") == answer
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", "http://server:9/gallery")
    assert request.headers["X-API-Key"] == "secret"
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert form_fields(request) == {
        "label": ["parasitized"],
        "note": ["from slide 4"],
        "file": ["a.png", "b.jpg"],
    }


def test_raw_gallery_add_sends_one_image_as_the_body_and_the_label_in_the_query(
    image_file: Path,
) -> None:
    http, seen = recording_http(201, {"items": [gallery_item(5, created_now=True)]})
    client = CellsignClient("http://server:9", "secret", http_client=http, raw=True)
    client.gallery_add([image_file], "my label", note="n")
    (request,) = seen
    assert request.url.path == "/gallery"
    assert dict(request.url.params) == {"label": "my label", "note": "n"}
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.headers["X-API-Key"] == "secret"
    assert request.content == image_file.read_bytes()
    with pytest.raises(ValueError, match="a raw body carries one image"):
        client.gallery_add([image_file, image_file], "my label")
    assert len(seen) == 1


def test_gallery_add_without_a_note_sends_no_note_field(image_file: Path) -> None:
    http, seen = recording_http(201, {"items": [gallery_item(1)]})
    CellsignClient(http_client=http).gallery_add([image_file], "uninfected")
    assert form_fields(seen[0]) == {"label": ["uninfected"], "file": ["a.png"]}


@pytest.mark.parametrize(
    ("paths", "label", "note", "message"),
    [
        ([], "parasitized", None, "at least one image"),
        (["a.png"], "", None, r"a label has 1 to 64 printable characters .*, got 0 characters"),
        (["a.png"], "x" * 65, None, "a label has 1 to 64 printable characters"),
        (["a.png"], "two\nlines", None, "no control characters or line breaks"),
        (["a.png"], "tab\there", None, "no control characters or line breaks"),
        (["a.png"], "parasitized", "n" * 257, "a note has at most 256 printable characters"),
        (["a.png"], "parasitized", "bell\a", "a note has at most 256 printable characters"),
    ],
)
def test_gallery_add_refuses_bad_arguments_before_any_request(
    tmp_path: Path, paths: list[str], label: str, note: str | None, message: str
) -> None:
    client = CellsignClient(http_client=mock_http(no_request))
    with pytest.raises(ValueError, match=message):
        client.gallery_add([tmp_path / path for path in paths], label, note=note)


def test_gallery_item_and_remove_address_the_id_with_the_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json=gallery_item(42))

    client = CellsignClient("http://server:9", "secret", http_client=mock_http(handler))
    assert client.gallery_item(42) == gallery_item(42)
    assert client.gallery_remove(42) is None
    assert [(r.method, str(r.url)) for r in seen] == [
        ("GET", "http://server:9/gallery/42"),
        ("DELETE", "http://server:9/gallery/42"),
    ]
    assert all(request.headers["X-API-Key"] == "secret" for request in seen)


@pytest.mark.parametrize("bad_id", [-1, True, "7", 1.0])
def test_gallery_ids_must_be_whole_numbers_before_they_reach_a_url(bad_id: object) -> None:
    client = CellsignClient(http_client=mock_http(no_request))
    for call in (client.gallery_item, client.gallery_remove):
        with pytest.raises(ValueError, match="a gallery id is a whole number"):
            call(bad_id)  # type: ignore[arg-type]


def test_removing_an_unknown_id_raises_with_the_servers_detail() -> None:
    http = mock_http(lambda request: httpx.Response(404, json={"detail": "no gallery cell 3"}))
    with pytest.raises(CellsignError, match="HTTP 404: no gallery cell 3") as raised:
        CellsignClient(http_client=http).gallery_remove(3)
    assert raised.value.status_code == 404


def test_gallery_list_passes_only_the_given_parameters() -> None:
    http, seen = recording_http(200, {"items": [], "next": None})
    client = CellsignClient(http_client=http)
    client.gallery_list()
    client.gallery_list(label="uninfected", limit=10, after=0)
    assert [dict(request.url.params) for request in seen] == [
        {},
        {"label": "uninfected", "limit": "10", "after": "0"},
    ]
    with pytest.raises(ValueError, match="limit must be at least 1"):
        client.gallery_list(limit=0)
    assert len(seen) == 2


def paged_gallery(ids: list[int], seen: list[dict[str, str]]) -> Handler:
    """A mock GET /gallery over ``ids`` that honours ``limit`` and ``after`` as the API does."""

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        after = int(params.get("after", -1))
        limit = int(params.get("limit", 2))
        page = [i for i in ids if i > after][:limit]
        more = bool(page) and page[-1] != ids[-1]
        return httpx.Response(
            200, json={"items": [gallery_item(i) for i in page], "next": page[-1] if more else None}
        )

    return handler


def test_gallery_items_follows_the_cursor_to_the_last_page() -> None:
    seen: list[dict[str, str]] = []
    client = CellsignClient(http_client=mock_http(paged_gallery([3, 8, 20, 31, 40], seen)))
    items = client.gallery_items(label="parasitized", limit=2)
    assert [item["id"] for item in items] == [3, 8, 20, 31, 40]
    assert [params.get("after") for params in seen] == [None, "8", "31"]
    assert {params["label"] for params in seen} == {"parasitized"}


def test_gallery_items_stops_on_a_cursor_that_does_not_move_forwards() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"items": [gallery_item(5)], "next": 5})

    items = CellsignClient(http_client=mock_http(handler)).gallery_items()
    with pytest.raises(CellsignError, match="cursor did not move forwards: 5"):
        list(items)
    assert len(calls) == 2


@pytest.mark.parametrize("raw", [False, True])
def test_similar_passes_the_label_filter(image_file: Path, raw: bool) -> None:
    http, seen = recording_http(200, {"results": []})
    client = CellsignClient(http_client=http, raw=raw)
    client.similar(image_file, k=3, label="uninfected")
    client.similar(image_file, k=3)
    assert [dict(request.url.params) for request in seen] == [
        {"k": "3", "label": "uninfected"},
        {"k": "3"},
    ]
    with pytest.raises(ValueError, match="a label has 1 to 64 printable characters"):
        client.similar(image_file, label="")


def test_cli_similar_label_is_sent_and_printed_per_neighbour(
    image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = {"results": [{"id": 7, "label": "uninfected", "distance": 0.25, "image_url": "/x"}]}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["label"] == "uninfected"
        return httpx.Response(200, json=answer)

    argv = ["similar", "--label", "uninfected", str(image_file)]
    assert main(argv, http_client=mock_http(handler)) == 0
    assert capsys.readouterr().out == "1. id 7  label uninfected  distance 0.25\n"


def test_cli_gallery_add_says_which_files_were_new_and_which_were_there(
    image_file: Path,
    second_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = {
        "items": [
            gallery_item(11, "mine", created_now=True),
            gallery_item(12, "theirs", created_now=False),
        ]
    }
    keys: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("X-API-Key"))
        assert form_fields(request)["note"] == ["two cells"]
        return httpx.Response(201, json=answer)

    monkeypatch.setenv("CELLSIGN_API_KEY", "from-env")
    argv = [
        "gallery",
        "add",
        "--label",
        "mine",
        "--note",
        "two cells",
        str(image_file),
        str(second_file),
    ]
    assert main(argv, http_client=mock_http(handler)) == 0
    assert capsys.readouterr().out == (
        f"{image_file}: added as id 11 (label mine)\n"
        f"{second_file}: already in the gallery as id 12 (label theirs)\n"
    )
    assert main(["--api-key", "given", *argv], http_client=mock_http(handler)) == 0
    assert keys == ["from-env", "given"]


def test_cli_gallery_add_without_the_key_prints_the_refusal_on_one_line(
    image_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELLSIGN_API_KEY", raising=False)

    def handler(request: httpx.Request) -> httpx.Response:
        assert "X-API-Key" not in request.headers
        return httpx.Response(401, json={"detail": "missing or wrong X-API-Key header"})

    argv = ["gallery", "add", "--label", "mine", str(image_file)]
    assert main(argv, http_client=mock_http(handler)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: HTTP 401: missing or wrong X-API-Key header\n"


def test_cli_gallery_rm_removes_in_order_and_stops_at_the_first_refusal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    removed: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        item_id = request.url.path.rsplit("/", 1)[1]
        if item_id == "2":
            return httpx.Response(404, json={"detail": "no gallery cell with id 2"})
        removed.append(item_id)
        return httpx.Response(204)

    assert main(["gallery", "rm", "1", "2", "3"], http_client=mock_http(handler)) == 1
    captured = capsys.readouterr()
    assert removed == ["1"]
    assert captured.out == "removed 1\n"
    assert captured.err == "error: HTTP 404: no gallery cell with id 2\n"


def test_cli_gallery_ls_prints_one_page_and_how_to_ask_for_the_next(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[dict[str, str]] = []
    http = mock_http(paged_gallery([3, 8, 20], seen))
    assert main(["gallery", "ls", "--label", "parasitized", "--limit", "2"], http) == 0
    captured = capsys.readouterr()
    assert captured.out == (
        "3\tparasitized\tadded\t2023-11-14T22:13:20Z\t\n8\tparasitized\tadded\t2023-11-14T22:13:20Z\t\n"
    )
    assert captured.err == "more: add --after 8 for the next page, or --all\n"
    assert main(["gallery", "ls", "--limit", "2", "--after", "8"], http) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["20\tparasitized\tadded\t2023-11-14T22:13:20Z\t"]
    assert captured.err == ""
    assert seen == [{"label": "parasitized", "limit": "2"}, {"limit": "2", "after": "8"}]


def test_cli_gallery_ls_all_follows_the_cursor(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[dict[str, str]] = []
    http = mock_http(paged_gallery([3, 8, 20, 31, 40], seen))
    assert main(["gallery", "ls", "--all", "--limit", "2"], http) == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [
        "3", "8", "20", "31", "40"
    ]  # fmt: skip
    assert captured.err == ""
    assert main(["--json", "gallery", "ls", "--all"], http) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in listed["items"]] == [3, 8, 20, 31, 40]
    assert listed["next"] is None


def test_cli_gallery_ls_puts_a_note_on_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    item = gallery_item(4, "odd one", note="two\nlines\tand tabs", source="offline")
    http = mock_http(lambda request: httpx.Response(200, json={"items": [item], "next": None}))
    assert main(["gallery", "ls"], http) == 0
    assert (
        capsys.readouterr().out == "4\todd one\toffline\t2023-11-14T22:13:20Z\ttwo lines and tabs\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gallery"], "required: {add,rm,ls}"),
        (["gallery", "add", "a.png"], "required: --label"),
        (["gallery", "add", "--label", "mine"], "required: IMAGE"),
        (["gallery", "add", "--label", "", "a.png"], "a label has 1 to 64 printable characters"),
        (
            ["gallery", "add", "--label", "x" * 65, "a.png"],
            "a label has 1 to 64 printable characters",
        ),
        (["gallery", "add", "--label", "m", "--note", "n" * 257, "a.png"], "at most 256"),
        (["gallery", "rm"], "required: ID"),
        (["gallery", "rm", "12", "abc"], "a gallery id is a whole number, got 'abc'"),
        (["gallery", "rm", "-1"], "a gallery id is a whole number"),
        (["gallery", "rm", "１２"], "a gallery id is a whole number"),
        (["gallery", "ls", "--limit", "0"], "must be at least 1, got 0"),
        (["gallery", "ls", "--after", "x"], "a gallery id is a whole number"),
        (["gallery", "mv", "1"], "invalid choice: 'mv'"),
        (["similar", "--label", "", "a.png"], "a label has 1 to 64 printable characters"),
    ],
)
def test_cli_gallery_argument_errors_are_usage_errors_before_any_request(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv, http_client=mock_http(no_request))
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


# The gallery on the real app (quick models), with writes behind the API key.
GALLERY_KEY = "gallery-key"


@pytest.fixture(scope="module")
def gallery_http(
    quick_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    gallery_dir = tmp_path_factory.mktemp("client-gallery")
    settings = settings_for(quick_models, api_key=GALLERY_KEY, gallery_dir=gallery_dir)
    with TestClient(create_app(settings)) as http:
        yield http


def test_real_app_gallery_add_find_by_label_and_remove(
    gallery_http: TestClient, cell_png: Path
) -> None:
    reader = CellsignClient(http_client=gallery_http)
    writer = CellsignClient(api_key=GALLERY_KEY, http_client=gallery_http)
    with pytest.raises(CellsignError) as refused:
        reader.gallery_add([cell_png], "client test")
    assert refused.value.status_code == 401
    assert reader.gallery_list(label="client test") == {"items": [], "next": None}

    (added,) = writer.gallery_add([cell_png], "client test", note="made by the client")["items"]
    assert (added["label"], added["note"], added["source"]) == (
        "client test",
        "made by the client",
        "added",
    )
    assert added["created_now"] is True
    item = reader.gallery_item(added["id"])
    assert item == {key: value for key, value in added.items() if key != "created_now"}
    (again,) = writer.gallery_add([cell_png], "another label")["items"]
    assert (again["id"], again["label"], again["created_now"]) == (
        added["id"],
        "client test",
        False,
    )

    assert [i["id"] for i in reader.gallery_items(label="client test")] == [added["id"]]
    (nearest,) = reader.similar(cell_png, k=3, label="client test")["results"]
    assert (nearest["id"], nearest["label"]) == (added["id"], "client test")
    assert png_size(reader.gallery_image(nearest["image_url"]))[0] > 0

    with pytest.raises(CellsignError) as refused:
        reader.gallery_remove(added["id"])
    assert refused.value.status_code == 401
    writer.gallery_remove(added["id"])
    for call in (reader.gallery_item, writer.gallery_remove):
        with pytest.raises(CellsignError) as gone:
            call(added["id"])
        assert gone.value.status_code == 404
    assert reader.similar(cell_png, k=3, label="client test")["results"] == []


def test_real_app_cli_lists_every_page_of_the_offline_gallery(
    gallery_http: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    reader = CellsignClient(http_client=gallery_http)
    labels = {item["label"] for item in reader.gallery_items(limit=1000)}
    assert len(labels) >= 2
    by_label = {label: [i["id"] for i in reader.gallery_items(label=label)] for label in labels}
    assert main(["gallery", "ls", "--all", "--limit", "7"], http_client=gallery_http) == 0
    lines = capsys.readouterr().out.splitlines()
    ids = [int(line.split("\t")[0]) for line in lines]
    assert ids == sorted(set(ids))
    assert sorted(ids) == sorted(i for listed in by_label.values() for i in listed)
    assert {line.split("\t")[2] for line in lines} == {"offline"}


def test_real_app_cli_gallery_add_and_rm_with_the_key(
    gallery_http: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    first.write_bytes(image_bytes("PNG", size=(30, 30)))
    second.write_bytes(image_bytes("PNG", size=(31, 30)))
    key = ["--api-key", GALLERY_KEY]
    add = ["gallery", "add", "--label", "cli test", str(first), str(second)]
    assert main(add, http_client=gallery_http) == 1
    assert capsys.readouterr().err == "error: HTTP 401: missing or wrong X-API-Key header\n"
    assert main([*key, *add], http_client=gallery_http) == 0
    lines = capsys.readouterr().out.splitlines()
    ids = [
        int(re.fullmatch(r".*: added as id (\d+) \(label cli test\)", line)[1]) for line in lines
    ]
    assert len(set(ids)) == 2
    assert main([*key, *add], http_client=gallery_http) == 0
    assert "already in the gallery as id" in capsys.readouterr().out
    assert main(["gallery", "ls", "--label", "cli test"], http_client=gallery_http) == 0
    assert sorted(
        int(line.split("\t")[0]) for line in capsys.readouterr().out.splitlines()
    ) == sorted(ids)
    assert main([*key, "gallery", "rm", *map(str, ids)], http_client=gallery_http) == 0
    assert capsys.readouterr().out == "".join(f"removed {item_id}\n" for item_id in ids)
    assert main([*key, "gallery", "rm", str(ids[0])], http_client=gallery_http) == 1
    assert capsys.readouterr().err == f"error: HTTP 404: no gallery cell with id {ids[0]}\n"
