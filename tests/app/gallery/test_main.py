"""``python -m app.gallery export|import``: a gallery moves between stores (embedded ->
Milvus on a real server) and answers the same searches; hostile or broken exports are
refused in one line, before anything is written."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.gallery.__main__ import MAX_LINE_BYTES, main
from app.gallery.sqlite_store import SqliteGalleryStore
from app.gallery.store import CodeSpace, GalleryStore, id_of
from tests.app.gallery.milvus_server import (
    MilvusServer,
    milvus_store_factory,
    shared_server,
    stop_shared_server,
)
from tests.app.gallery.store_behaviour import DIMENSION, V1, V2, cell, codes_for

LABELS = ["parasitized", "uninfected", "parasitized", 'odd "label" \\ é', "uninfected"] * 4


def embedded_gallery(directory: Path, count: int = len(LABELS)) -> SqliteGalleryStore:
    store = SqliteGalleryStore(directory)
    store.open_space(V1)
    store.activate(V1)
    sources = ["offline" if n % 3 == 0 else "added" for n in range(count)]
    items = [
        cell(n, LABELS[n], note=f"cell {n}", source=sources[n])  # type: ignore[arg-type]
        for n in range(count)
    ]
    store.add(items, codes_for(range(count)), V1)
    return store


def answers(store: GalleryStore) -> list[object]:
    """What a client sees: the listing (without ``created``, which the import sets anew),
    labels, images, and searches with and without a label filter."""
    listed = store.items(None, 1000, None)
    seen: list[object] = [
        [(i.id, i.label, i.note, i.source) for i in listed],
        store.labels(),
        [store.image(i.id) for i in listed],
    ]
    for number in range(0, 40, 3):
        query = np.random.default_rng([number, 99]).normal(size=DIMENSION)
        for label in (None, "uninfected", 'odd "label" \\ é'):
            found = store.search(query, 4, label)
            seen.append([(n.id, n.label, round(n.distance, 4)) for n in found])
    return seen


def run(*argv: str | Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def milvus() -> Iterator[MilvusServer]:
    server = shared_server()  # skips, saying why, where no server can start
    yield server
    stop_shared_server()


def test_an_embedded_gallery_moves_to_milvus_and_answers_the_same(
    tmp_path: Path, milvus: MilvusServer, capsys: pytest.CaptureFixture[str]
) -> None:
    source = embedded_gallery(tmp_path / "gallery")
    expected = answers(source)
    source.close()
    export = tmp_path / "gallery.tar"
    code, out, _ = run("export", export, "--from", tmp_path / "gallery", capsys=capsys)
    assert (code, out) == (
        0,
        f"exported {len(LABELS)} items ({len(LABELS)} with codes) to {export}\n",
    )
    target = milvus_store_factory()
    url = milvus.url(target.location.prefix)
    code, out, _ = run("import", export, "--to", url, capsys=capsys)
    assert (code, out) == (0, f"imported {len(LABELS)} items (0 were there already)\n")
    target.refresh()
    assert target.active_space() == V1
    assert answers(target) == expected
    # Imported again: nothing new, nothing changed.
    code, out, _ = run("import", export, "--to", url, capsys=capsys)
    assert (code, out) == (0, f"imported 0 items ({len(LABELS)} were there already)\n")
    assert answers(target) == expected
    # And back out of Milvus into a new embedded gallery.
    back = tmp_path / "back.tar"
    assert run("export", back, "--from", url, capsys=capsys)[0] == 0
    assert run("import", back, "--to", tmp_path / "again", capsys=capsys)[0] == 0
    again = SqliteGalleryStore(tmp_path / "again")
    assert answers(again) == expected
    again.close()


def test_an_export_moves_between_embedded_galleries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = embedded_gallery(tmp_path / "one")
    expected = answers(source)
    source.close()
    assert run("export", tmp_path / "g.tar", "--from", tmp_path / "one", capsys=capsys)[0] == 0
    assert run("import", tmp_path / "g.tar", "--to", tmp_path / "two", capsys=capsys)[0] == 0
    target = SqliteGalleryStore(tmp_path / "two")
    assert answers(target) == expected
    target.close()


def test_the_settings_name_the_gallery_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an operator runs it: ``python -m app.gallery`` in a fresh interpreter, the gallery
    from GALLERY_DIR."""
    embedded_gallery(tmp_path / "gallery", count=3).close()
    monkeypatch.setenv("GALLERY_DIR", str(tmp_path / "gallery"))
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("GALLERY_URL", raising=False)
    done = subprocess.run(
        [sys.executable, "-m", "app.gallery", "export", str(tmp_path / "g.tar")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stdout) == (
        0,
        f"exported 3 items (3 with codes) to {tmp_path / 'g.tar'}\n",
    )


def test_export_from_a_folder_without_a_gallery_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run("export", tmp_path / "g.tar", "--from", tmp_path / "none", capsys=capsys)
    assert code == 1 and out == ""
    assert err == f"error: {tmp_path / 'none'} holds no gallery (gallery.sqlite3 is missing)\n"
    assert not (tmp_path / "none").exists() and not (tmp_path / "g.tar").exists()


def test_import_into_a_gallery_of_another_space_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    embedded_gallery(tmp_path / "one", count=3).close()
    assert run("export", tmp_path / "g.tar", "--from", tmp_path / "one", capsys=capsys)[0] == 0
    other = SqliteGalleryStore(tmp_path / "two")
    other.open_space(V2)
    other.activate(V2)
    other.close()
    code, _, err = run("import", tmp_path / "g.tar", "--to", tmp_path / "two", capsys=capsys)
    assert code == 1
    assert err.startswith("error: the target gallery searches encoder version 2 codes")
    assert SqliteGalleryStore(tmp_path / "two").count() == 0


# Hostile and broken exports --------------------------------------------------------------------


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def record(number: int, **changes: object) -> dict[str, object]:
    item = cell(number, "a")
    fields: dict[str, object] = {
        "id": id_of(item.digest),
        "label": "a",
        "note": "",
        "created": 1.0,
        "source": "added",
        "digest": item.digest.hex(),
        "png": base64.b64encode(item.png).decode(),
    }
    return {**fields, **changes}


def members(records: list[dict[str, object]], space: CodeSpace | None = V1) -> dict[str, bytes]:
    """The members of a well-formed export of ``records`` (every one with a code)."""
    ids = np.array([r["id"] for r in records], np.int64)
    dimension = space.dimension if space else 0
    manifest = {
        "format": "cellsign-gallery-export",
        "version": 1,
        "space": None if space is None else space.__dict__,
        "items": len(records),
        "codes": len(records),
    }
    return {
        "manifest.json": json.dumps(manifest).encode(),
        "code_ids.npy": npy(ids),
        "codes.npy": npy(codes_for(range(len(records)))[:, :dimension]),
        "items.jsonl": b"".join(json.dumps(r).encode() + b"\n" for r in records),
    }


def write_tar(path: Path, content: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_a_well_formed_handmade_export_imports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The baseline of the hostile cases below: the same file without their flaw works."""
    path = write_tar(tmp_path / "g.tar", members([record(1), record(2)]))
    assert run("import", path, "--to", tmp_path / "target", capsys=capsys)[0] == 0
    assert SqliteGalleryStore(tmp_path / "target").count() == 2


def big_header_npy() -> bytes:
    header = b"{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }"
    header += b" " * (200_000 - len(header)) + b"\n"
    return b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header


CASES = {
    "not a tar": lambda good: b"just text",
    "manifest not JSON": lambda good: {**good, "manifest.json": b"{"},
    "manifest too large": lambda good: {**good, "manifest.json": b" " * 70_000 + b"{}"},
    "another format": lambda good: {
        **good,
        "manifest.json": good["manifest.json"].replace(b"cellsign-gallery-export", b"zip"),
    },
    "a trillion items": lambda good: {
        **good,
        "manifest.json": good["manifest.json"].replace(b'"items": 2', b'"items": 1000000000000'),
    },
    "codes of another shape": lambda good: {**good, "codes.npy": npy(np.ones((2, 3), np.float32))},
    "codes cut short": lambda good: {**good, "codes.npy": good["codes.npy"][:-4]},
    "codes that are not numbers": lambda good: {
        **good,
        "codes.npy": npy(np.full((2, DIMENSION), np.nan, np.float32)),
    },
    "an oversized npy header": lambda good: {**good, "code_ids.npy": big_header_npy()},
    "pickled codes": lambda good: {**good, "codes.npy": npy(np.array([None, 1], object))},
    "no items file": lambda good: {k: v for k, v in good.items() if k != "items.jsonl"},
    "an endless line": lambda good: {**good, "items.jsonl": b"x" * (MAX_LINE_BYTES + 10)},
    "more items than announced": lambda good: {
        **good,
        "items.jsonl": good["items.jsonl"] + json.dumps(record(3)).encode() + b"\n",
    },
    "a bad last line": lambda good: {
        **good,
        "items.jsonl": good["items.jsonl"].rsplit(b"\n", 2)[0] + b"\n{}\n",
    },
}


def flawed(number: int, **changes: object) -> dict[str, bytes]:
    return members([record(1), record(number, **changes)])


RECORD_CASES = {
    "a label too long": lambda: flawed(2, label="x" * 65),
    "a label with a line break": lambda: flawed(2, label="a\nb"),
    "an unknown source": lambda: flawed(2, source="stolen"),
    "an id its digest does not ask for": lambda: flawed(2, id=5),
    "a PNG that is not one": lambda: flawed(2, png=base64.b64encode(b"GIF89a").decode()),
    "a PNG in bad base64": lambda: flawed(2, png="!!!"),
    "a record that is a list": lambda: {
        **members([record(1), record(2)]),
        "items.jsonl": json.dumps(record(1)).encode() + b"\n[1]\n",
    },
}


@pytest.mark.parametrize("case", [*CASES, *RECORD_CASES])
def test_a_broken_or_hostile_export_is_refused_before_any_write(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = members([record(1), record(2)])
    content = CASES[case](good) if case in CASES else RECORD_CASES[case]()
    path = tmp_path / "g.tar"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_tar(path, content)
    code, out, err = run("import", path, "--to", tmp_path / "target", capsys=capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    target = SqliteGalleryStore(tmp_path / "target")
    assert target.count() == 0
    assert target.active_space() is None
    target.close()


def test_a_member_that_is_a_link_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = members([record(1)])
    del content["items.jsonl"]
    path = write_tar(tmp_path / "g.tar", content, links={"items.jsonl": "/etc/passwd"})
    code, _, err = run("import", path, "--to", tmp_path / "target", capsys=capsys)
    assert code == 1
    assert err == "error: items.jsonl in the export is not a regular file\n"


def test_items_without_a_code_are_reported_not_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = members([record(1), record(2)])
    manifest = json.loads(content["manifest.json"])
    manifest["codes"] = 1
    content["manifest.json"] = json.dumps(manifest).encode()
    content["code_ids.npy"] = npy(np.array([record(2)["id"]], np.int64))
    content["codes.npy"] = npy(codes_for([2]))
    path = write_tar(tmp_path / "g.tar", content)
    code, out, _ = run("import", path, "--to", tmp_path / "target", capsys=capsys)
    assert (code, out) == (
        0,
        "imported 1 items (0 were there already, 1 skipped: no code in the export)\n",
    )
    target = SqliteGalleryStore(tmp_path / "target")
    assert [item.id for item in target.items(None, 10, None)] == [record(2)["id"]]
    target.close()
