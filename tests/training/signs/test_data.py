"""SIGNS loading from image folders and HDF5 files, and the stratified splits."""

from __future__ import annotations

import functools
import http.server
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from tests.training import image_folders
from training.errors import DataError
from training.signs import data as signs_data
from training.signs.data import (
    SignsData,
    download_signs,
    find_course_signs,
    find_signs_source,
    load_class_folders,
    load_signs,
    load_signs_folder,
    load_signs_h5,
    split_signs,
)


def _jpeg(color: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_folder(folder: Path, per_class: int = 4) -> Path:
    folder.mkdir(parents=True)
    for label in range(6):
        for index in range(per_class):
            name = f"{label}_IMG_{label * 100 + index}.jpg"
            (folder / name).write_bytes(_jpeg((40 * label, 10 * index, 200)))
    return folder


def _write_h5(path: Path, prefix: str, count: int, size: int = 64) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as file:
        file[f"{prefix}_x"] = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        file[f"{prefix}_y"] = np.arange(count) % 6
        file["list_classes"] = np.arange(6)


def test_folder_loader_reads_labels_from_names_and_resizes(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "train")
    data = load_signs_folder(folder, image_size=16)
    assert data.images.shape == (24, 16, 16, 3)
    assert data.images.dtype == np.uint8
    assert np.bincount(data.labels).tolist() == [4] * 6
    assert data.skipped == []


def test_unreadable_image_is_skipped_counted_and_logged(tmp_path: Path, caplog) -> None:
    folder = _write_folder(tmp_path / "train")
    (folder / "2_IMG_999.jpg").write_bytes(b"not a jpeg at all")
    with caplog.at_level(logging.WARNING):
        data = load_signs_folder(folder, image_size=16)
    assert data.skipped == ["2_IMG_999.jpg"]
    assert len(data) == 24
    assert "2_IMG_999.jpg" in caplog.text


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_folder_is_a_data_error_naming_it(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "signs"
    if make == "empty":
        folder.mkdir()
    with pytest.raises(DataError, match=str(folder)):
        load_signs_folder(folder, image_size=16)


def test_badly_named_image_is_a_data_error(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "train")
    (folder / "thumbs_up.jpg").write_bytes(_jpeg((1, 2, 3)))
    with pytest.raises(DataError, match="thumbs_up.jpg"):
        load_signs_folder(folder, image_size=16)


def test_hdf5_loader_reads_course_layout_and_resizes(tmp_path: Path) -> None:
    path = tmp_path / "train_signs.h5"
    _write_h5(path, "train_set", count=12)
    data = load_signs_h5(path, image_size=32)
    assert data.images.shape == (12, 32, 32, 3)
    assert data.labels.tolist() == [index % 6 for index in range(12)]


def test_hdf5_with_wrong_keys_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "signs.h5"
    with h5py.File(path, "w") as file:
        file["pictures"] = np.zeros((2, 64, 64, 3), np.uint8)
    with pytest.raises(DataError, match=r"signs\.h5.*train_set_x"):
        load_signs_h5(path, image_size=64)


def test_separate_test_file_becomes_the_held_out_test_set(tmp_path: Path) -> None:
    _write_h5(tmp_path / "train_signs.h5", "train_set", count=60)
    _write_h5(tmp_path / "test_signs.h5", "test_set", count=18)
    splits = load_signs(tmp_path, image_size=64, seed=0)
    assert splits.test.source.endswith("test_signs.h5")
    assert len(splits.test) == 18
    assert len(splits.train) + len(splits.validation) == 60


def test_data_root_resolves_to_signs_train(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "signs" / "train")
    assert find_signs_source(tmp_path) == folder
    assert find_signs_source(folder) == folder
    with pytest.raises(DataError, match="not an HDF5"):
        find_signs_source(next(folder.iterdir()))


def test_splits_are_stratified_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(6), 40)
    images = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(3, axis=-1)
    pool = SignsData(images, labels, "memory")
    splits = split_signs(pool, seed=7, test_fraction=0.15)
    for part, expected in ((splits.train, 28), (splits.validation, 6), (splits.test, 6)):
        assert np.bincount(part.labels, minlength=6).tolist() == [expected] * 6
    ids = [set(part.images[:, 0, 0, 0].tolist()) for part in (splits.train, splits.validation)]
    assert ids[0].isdisjoint(ids[1])
    assert ids[0].isdisjoint(splits.test.images[:, 0, 0, 0].tolist())
    again = split_signs(pool, seed=7)
    other = split_signs(pool, seed=8)
    assert np.array_equal(again.test.images, splits.test.images)
    assert not np.array_equal(other.test.images, splits.test.images)


@pytest.fixture
def course_files_server(tmp_path: Path) -> Iterator[str]:
    """A local HTTP mirror serving a small ``train_signs.h5`` and ``test_signs.h5``."""
    site = tmp_path / "site" / "datasets"
    site.mkdir(parents=True)
    _write_h5(site / "train_signs.h5", "train_set", 60)
    _write_h5(site / "test_signs.h5", "test_set", 12)
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site")
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/datasets/"
    finally:
        server.shutdown()
        server.server_close()


def test_download_falls_back_to_the_next_mirror_and_loads(
    course_files_server: str, tmp_path: Path, monkeypatch
) -> None:
    dead_mirror = course_files_server.replace("/datasets/", "/missing/")  # answers 404
    monkeypatch.setattr(signs_data, "DOWNLOAD_MIRRORS", [dead_mirror, course_files_server])
    cache = tmp_path / "cache"
    folder = download_signs(cache_dir=cache)
    assert folder == cache / "signs"
    assert {path.name for path in folder.iterdir()} >= {"train_signs.h5", "test_signs.h5"}

    monkeypatch.setattr(signs_data, "download_signs", lambda: download_signs(cache_dir=cache))
    splits = load_signs(None, 64, seed=0)
    assert len(splits.test) == 12  # the downloaded test file is the held-out set
    assert len(splits.train) + len(splits.validation) == 60


def test_download_with_every_mirror_down_is_one_data_error(
    course_files_server: str, tmp_path: Path, monkeypatch
) -> None:
    dead_mirror = course_files_server.replace("/datasets/", "/missing/")
    monkeypatch.setattr(signs_data, "DOWNLOAD_MIRRORS", [dead_mirror])
    with pytest.raises(DataError, match="cannot download SIGNS"):
        download_signs(cache_dir=tmp_path / "cache")


# Class folders: DIR/<class>/*, any names, sizes, modes and formats.


def test_class_folders_give_sorted_class_names_and_every_format(tmp_path: Path) -> None:
    counts = {"zebra": 7, "Cat": 10, "dog house": 4}
    root = image_folders.write_class_folders(tmp_path / "data", counts, nested=True)
    data = load_class_folders(root, image_size=24)
    assert data.class_names == ["Cat", "dog house", "zebra"]  # sorted: the label order
    assert data.layout == "class folders"
    assert data.images.shape == (21, 24, 24, 3)
    assert np.bincount(data.labels).tolist() == [10, 4, 7]
    suffixes = {path.suffix for path in root.rglob("*") if path.is_file()}
    assert suffixes == {suffix for suffix, _, _ in image_folders.FORMATS}
    assert data.skipped == []


def test_load_signs_takes_class_folders_and_splits_every_class(tmp_path: Path) -> None:
    root = image_folders.write_class_folders(tmp_path / "data", {"left": 20, "right": 3})
    splits = load_signs(root, image_size=16, seed=0)
    assert splits.class_names == ["left", "right"]
    counts = splits.class_counts()
    assert counts["validation"]["right"] == counts["test"]["right"] == 1
    assert sum(counts["train"].values()) + 2 + 2 * counts["test"]["left"] == 23
    assert splits.test.class_names == splits.train.class_names == ["left", "right"]


def test_unreadable_files_in_class_folders_are_skipped_and_counted(tmp_path: Path) -> None:
    root = image_folders.write_class_folders(tmp_path / "data", {"a": 4, "b": 4})
    (root / "a" / "broken.jpg").write_bytes(b"not an image")
    (root / "b" / "notes.txt").write_text("not an image file name either")
    data = load_class_folders(root, image_size=16)
    assert data.skipped == ["a/broken.jpg"]
    assert len(data) == 8


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"only": 5}, r"need at least 2 class sub-folders .* found only 'only'"),
        ({"a": 5, "b": 2}, r"/b: 2 image file\(s\); each class needs at least 3"),
        ({"a": 5, "b": 0}, r"/b: 0 image file\(s\)"),
    ],
)
def test_bad_class_folders_are_one_line_errors_naming_the_folder(
    tmp_path: Path, layout: dict[str, int], message: str
) -> None:
    root = tmp_path / "data"
    for name in layout:
        (root / name).mkdir(parents=True)
    image_folders.write_class_folders(root, {k: v for k, v in layout.items() if v})
    with pytest.raises(DataError, match=message) as caught:
        load_signs(root, image_size=16, seed=0)
    assert "\n" not in str(caught.value)


def test_a_class_of_unreadable_files_is_an_error_naming_it(tmp_path: Path) -> None:
    root = image_folders.write_class_folders(tmp_path / "data", {"a": 4})
    (root / "b").mkdir()
    for index in range(3):
        (root / "b" / f"{index}.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"/b: 0 readable image\(s\) of 3"):
        load_class_folders(root, image_size=16)


def test_a_folder_of_unreadable_signs_files_says_none_decoded(tmp_path: Path) -> None:
    (tmp_path / "0_IMG_1.jpg").write_bytes(b"broken")
    with pytest.raises(DataError, match="no readable images in .*: all 1 failed to decode"):
        load_signs_folder(tmp_path, image_size=16)


def test_course_signs_are_found_only_in_the_course_layout(tmp_path: Path) -> None:
    root = image_folders.write_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    assert find_course_signs(root) is None
    assert find_signs_source(root) == root
    signs = _write_folder(tmp_path / "root" / "signs" / "train")
    assert find_course_signs(tmp_path / "root") == signs
