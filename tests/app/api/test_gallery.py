"""The gallery's HTTP side in-process: POST, GET, DELETE /gallery and /similar?label=, over
the embedded store in a fresh GALLERY_DIR, with the quick models."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.gallery.service import ENCODE_CHUNK
from app.main import create_app
from tests.app.helpers import AppClientFactory, running_client, settings_for
from tests.app.samples import image_bytes

pytestmark = pytest.mark.anyio

KEY = {"X-API-Key": "s3cret"}


@pytest.fixture(scope="module")
async def api(
    quick_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """One app seeded from the quick models' index; each test adds cells under its own
    label, so that tests do not see each other's cells."""
    gallery_dir = tmp_path_factory.mktemp("gallery")
    app = create_app(settings_for(quick_models, gallery_dir=gallery_dir))
    async with running_client(app) as client:
        yield client


def new_label() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def cell_png(seed: int, size: tuple[int, int] = (40, 36)) -> bytes:
    """A cell no other test uploads (random colours from ``seed``)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def files(*cells: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"cell{n}.png", data, "image/png")) for n, data in enumerate(cells)]


async def add(
    api: httpx.AsyncClient, label: str, *cells: bytes, **extra: Any
) -> list[dict[str, Any]]:
    response = await api.post("/gallery", files=files(*cells), data={"label": label, **extra})
    assert response.status_code == 201, response.text
    return response.json()["items"]


async def labelled(api: httpx.AsyncClient, label: str) -> list[dict[str, Any]]:
    response = await api.get("/gallery", params={"label": label, "limit": 1000})
    assert response.status_code == 200
    return response.json()["items"]


async def test_added_cells_are_items_with_their_image_and_are_found_at_once(
    api: httpx.AsyncClient,
) -> None:
    label = new_label()
    response = await api.post(
        "/gallery", files=files(cell_png(1), cell_png(2)), data={"label": label, "note": "thin"}
    )
    assert response.status_code == 201
    assert response.headers["X-Index-Version"] == response.headers["X-Model-Version"] == "1"
    first, second = response.json()["items"]
    for item in (first, second):
        assert item["label"] == label and item["note"] == "thin" and item["source"] == "added"
        assert item["created_now"] is True
        assert item["image_url"] == f"/gallery/{item['id']}.png"
        assert 0 <= item["id"] < 2**53
    one = await api.get(f"/gallery/{first['id']}")
    assert one.status_code == 200
    assert one.json() == {k: v for k, v in first.items() if k != "created_now"}
    png = await api.get(first["image_url"])
    assert png.headers["content-type"] == "image/png"
    stored = np.asarray(Image.open(io.BytesIO(png.content)))
    assert np.array_equal(stored, np.asarray(Image.open(io.BytesIO(cell_png(1)))))
    found = await api.post("/similar", params={"k": 5, "label": label}, files=files(cell_png(2)))
    assert found.status_code == 200
    results = found.json()["results"]
    assert [r["id"] for r in results][:1] == [second["id"]]
    assert results[0]["distance"] < 1e-4
    assert {r["label"] for r in results} == {label}
    assert len(results) == 2  # exactly the label's cells, however large k is


async def test_each_cell_of_a_batch_larger_than_an_encoder_call_gets_its_own_code(
    api: httpx.AsyncClient,
) -> None:
    """The cells of one addition are encoded ENCODE_CHUNK at a time: every cell's code must
    still be its own (each one is its own nearest neighbour)."""
    label = new_label()
    cells = [cell_png(300 + n) for n in range(ENCODE_CHUNK + 3)]
    added = await add(api, label, *cells)
    for cell, item in zip(cells, added, strict=True):
        found = await api.post("/similar", params={"k": 1, "label": label}, files=files(cell))
        assert found.status_code == 200
        (nearest,) = found.json()["results"]
        assert nearest["id"] == item["id"] and nearest["distance"] < 1e-4


async def test_the_same_cell_again_is_the_same_item_unchanged(api: httpx.AsyncClient) -> None:
    label = new_label()
    (first,) = await add(api, label, cell_png(3))
    # The same pixels in another format, under another label: no second item.
    bmp = io.BytesIO()
    Image.open(io.BytesIO(cell_png(3))).save(bmp, format="BMP")
    (again,) = await add(api, new_label(), bmp.getvalue(), note="other")
    assert again["created_now"] is False
    assert again["id"] == first["id"] and again["label"] == label and again["note"] == ""
    assert len(await labelled(api, label)) == 1


async def test_a_cell_of_the_offline_gallery_uploaded_again_is_that_cell(
    api: httpx.AsyncClient,
) -> None:
    page = (await api.get("/gallery", params={"limit": 1})).json()
    (offline,) = page["items"]
    assert offline["source"] == "offline"
    png = (await api.get(offline["image_url"])).content
    (again,) = await add(api, new_label(), png)
    assert (again["id"], again["created_now"], again["source"]) == (offline["id"], False, "offline")


async def test_a_deleted_cell_is_gone_from_every_answer(api: httpx.AsyncClient) -> None:
    label = new_label()
    kept, gone = await add(api, label, cell_png(4), cell_png(5))
    deleted = await api.delete(f"/gallery/{gone['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    for path in (f"/gallery/{gone['id']}", gone["image_url"]):
        response = await api.get(path)
        assert response.status_code == 404
        assert str(gone["id"]) in response.json()["detail"]
    assert [item["id"] for item in await labelled(api, label)] == [kept["id"]]
    found = await api.post("/similar", params={"k": 5, "label": label}, files=files(cell_png(5)))
    assert [r["id"] for r in found.json()["results"]] == [kept["id"]]
    again = await api.delete(f"/gallery/{gone['id']}")
    assert again.status_code == 404 and "detail" in again.json()


async def test_the_listing_pages_through_every_item_once_in_id_order(
    api: httpx.AsyncClient,
) -> None:
    label = new_label()
    added = await add(api, label, *(cell_png(100 + n) for n in range(7)))
    seen: list[int] = []
    after = None
    while True:
        params: dict[str, Any] = {"label": label, "limit": 3}
        if after is not None:
            params["after"] = after
        page = (await api.get("/gallery", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        assert len(page["items"]) <= 3
        after = page["next"]
        if after is None:
            break
    assert seen == sorted(item["id"] for item in added)
    whole = (await api.get("/gallery")).json()
    assert len(whole["items"]) == 100  # GALLERY_PAGE_SIZE, the default
    assert whole["next"] == whole["items"][-1]["id"]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"after": "abc"}, "after"),
        ({"after": "-1"}, "after"),
        ({"after": "1e3"}, "after"),
        ({"after": "٣"}, "after"),
        ({"after": "9" * 19}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"label": ""}, "label"),
        ({"label": "x" * 65}, "label"),
        ({"label": "a\x00b"}, "label"),
    ],
)
async def test_a_malformed_listing_query_is_a_422(
    api: httpx.AsyncClient, params: dict[str, str], name: str
) -> None:
    response = await api.get("/gallery", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", name]


@pytest.mark.parametrize("path", ["/gallery/abc", "/gallery/-1", "/gallery/1.5", "/gallery/٣"])
async def test_a_malformed_id_is_a_422_and_an_unknown_one_a_404(
    api: httpx.AsyncClient, path: str
) -> None:
    assert (await api.get(path)).status_code == 422
    assert (await api.delete(path)).status_code == 422
    for unknown in ("/gallery/7", f"/gallery/{10**18 - 1}", f"/gallery/{2**53}"):
        assert (await api.get(unknown)).status_code == 404
        assert (await api.delete(unknown)).status_code == 404


def form(label: str | None, *cells: bytes, **fields: str) -> dict[str, Any]:
    data = dict(fields)
    if label is not None:
        data["label"] = label
    return {"files": files(*cells), "data": data}


@pytest.mark.parametrize(
    ("request_parts", "status", "says"),
    [
        (form(None, b"x"), 422, "label"),
        (form("", b"x"), 422, "label"),
        (form("x" * 65, b"x"), 422, "label"),
        (form("line\nbreak", b"x"), 422, "label"),
        (form("ok", b"x", note="n" * 257), 422, "note"),
        (form("ok", b"not an image at all"), 415, "not an image"),
        (form("ok", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), 400, "cell0.png"),
        (form("ok"), 422, "file"),
        ({"data": {"label": "ok", "file": "text, not a file"}}, 422, "file"),
        (form("ok", *(image_bytes("PNG", (8, 8)) for _ in range(65))), 413, "64"),
    ],
)
async def test_a_refused_addition_changes_nothing(
    api: httpx.AsyncClient, request_parts: dict[str, Any], status: int, says: str
) -> None:
    before = await labelled(api, "ok")
    good = cell_png(7)  # goes with the bad part: refused with it
    parts = dict(request_parts)
    if "files" in parts and parts["files"] and status in (415, 400):
        parts["files"] = [*files(good), *parts["files"]]
    response = await api.post("/gallery", **parts)
    assert response.status_code == status, response.text
    assert says in str(response.json()["detail"])
    found = await api.post("/similar", params={"k": 1}, files=files(good))
    assert found.json()["results"][0]["distance"] > 1e-4  # the good cell was not stored
    assert await labelled(api, "ok") == before


async def test_a_raw_image_body_takes_its_label_from_the_query(api: httpx.AsyncClient) -> None:
    label = new_label()
    response = await api.post(
        "/gallery",
        params={"label": label, "note": "raw"},
        content=cell_png(8),
        headers={"Content-Type": "image/png"},
    )
    assert response.status_code == 201
    (item,) = response.json()["items"]
    assert (item["label"], item["note"]) == (label, "raw")
    missing = await api.post("/gallery", content=cell_png(9), headers={"Content-Type": "image/png"})
    assert missing.status_code == 422 and "label" in str(missing.json()["detail"])


async def test_similar_filters_by_label_exactly(api: httpx.AsyncClient) -> None:
    body = (await api.get("/readyz")).json()["gallery"]
    assert set(body["labels"]) >= {"parasitized", "uninfected"}
    query = files(image_bytes())
    for label in ("parasitized", "uninfected"):
        response = await api.post("/similar", params={"k": 20, "label": label}, files=query)
        results = response.json()["results"]
        assert len(results) == 20 and {r["label"] for r in results} == {label}
        distances = [r["distance"] for r in results]
        assert distances == sorted(distances)
    nobody = await api.post("/similar", params={"label": new_label()}, files=query)
    assert nobody.status_code == 200 and nobody.json()["results"] == []


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"label": "x" * 65}, 422),
        ({"label": ""}, 422),
        ({"version": "1"}, 200),
        ({"version": "2"}, 404),
        ({"version": "abc"}, 422),
        ({"k": "0"}, 422),
    ],
)
async def test_similar_parameters(
    api: httpx.AsyncClient, params: dict[str, str], status: int
) -> None:
    response = await api.post("/similar", params=params, files=files(image_bytes()))
    assert response.status_code == status, response.text
    if status == 200:
        assert response.headers["X-Index-Version"] == response.headers["X-Model-Version"] == "1"
        assert response.json()["index"] == {
            "size": response.json()["index"]["size"],
            "type": "sqlite",
            "version": 1,
        }


async def test_readyz_and_models_describe_the_gallery(api: httpx.AsyncClient) -> None:
    ready = (await api.get("/readyz")).json()
    gallery = ready["gallery"]
    assert gallery["ready"] and gallery["store"] == "sqlite"
    assert (gallery["encoder_version"], gallery["dimension"], gallery["metric"]) == (
        1,
        64,
        "cosine",
    )
    assert gallery["items"] >= 1412 and gallery["offline_version"] == 1
    assert gallery["reencoding"] is None
    models = (await api.get("/models")).json()
    assert models["similar_encoder"] == 1 and models["gallery"]["store"] == "sqlite"


async def test_gallery_writes_need_the_key_reads_only_with_scope_all(
    make_client: AppClientFactory, quick_models: Path, tmp_path: Path
) -> None:
    settings = {"api_key": "s3cret", "gallery_dir": tmp_path / "admin"}
    async with make_client(quick_models, **settings) as client:
        refused = await client.post("/gallery", **form("mine", cell_png(10)))
        assert refused.status_code == 401 and "X-API-Key" in refused.json()["detail"]
        assert (await client.delete("/gallery/1")).status_code == 401
        assert (await client.get("/gallery")).status_code == 200
        assert (await client.get("/readyz")).json()["gallery"]["items"] == 1412
        added = await client.post("/gallery", headers=KEY, **form("mine", cell_png(10)))
        assert added.status_code == 201
        item_id = added.json()["items"][0]["id"]
        assert (await client.get(f"/gallery/{item_id}")).status_code == 200
        assert (await client.delete(f"/gallery/{item_id}", headers=KEY)).status_code == 204
    settings = {**settings, "api_key_scope": "all", "gallery_dir": tmp_path / "all"}
    async with make_client(quick_models, **settings) as client:
        for path in ("/gallery", "/gallery/1", "/gallery/1.png"):
            assert (await client.get(path)).status_code == 401
        assert (await client.get("/gallery", headers=KEY)).status_code == 200


async def test_an_addition_larger_than_its_files_may_be_is_refused_unread(
    make_client: AppClientFactory, quick_models: Path, tmp_path: Path
) -> None:
    settings = {"gallery_dir": tmp_path / "g", "gallery_max_files": 2, "max_upload_bytes": 1000}
    async with make_client(quick_models, **settings) as client:
        response = await client.post(
            "/gallery",
            content=b"x" * 100_000,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert response.status_code == 413
        assert "byte limit of /gallery" in response.json()["detail"]
        three = await client.post("/gallery", **form("ok", *(cell_png(n) for n in range(3))))
        assert three.status_code == 413 and "at most 2" in three.json()["detail"]


async def test_a_gallery_inside_the_models_folder_is_refused(quick_models: Path) -> None:
    with pytest.raises(ValueError, match="GALLERY_DIR .* must not be inside MODEL_DIR"):
        settings_for(quick_models, gallery_dir=quick_models / "gallery")


async def test_openapi_documents_the_gallery(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert {"get", "post"} <= set(paths["/gallery"])
    assert {"get", "delete"} <= set(paths["/gallery/{item_id}"])
    body = paths["/gallery"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert {"file", "label", "note"} <= set(body["schema"]["properties"])
    assert "label" in {p["name"] for p in paths["/similar"]["post"]["parameters"]}
