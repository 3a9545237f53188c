"""Cell data: NIH and user layouts, any image mode, corrupt files, seeded stratified split."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tests.training import image_folders
from training.errors import DataError
from training.malaria.data import (
    list_cells,
    load_malaria,
    resolve_zip_or_folder,
    stratified_split,
    subsample,
)

MODES = ("L", "RGB", "RGBA", "P", "I;16")


def _png(mode: str, value: int) -> bytes:
    image = Image.new("L", (50, 40), value).convert(mode) if mode != "I;16" else None
    if image is None:
        image = Image.fromarray(np.full((40, 50), value * 257, dtype=np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _cells(per_label: int) -> dict[str, bytes]:
    """``cell_images/<Label>/<n>.png`` members in several modes, plus one corrupt file."""
    files = {}
    for label, value in (("Parasitized", 60), ("Uninfected", 200)):
        for n in range(per_label):
            files[f"cell_images/{label}/{n}.png"] = _png(MODES[n % len(MODES)], value)
    files["cell_images/Uninfected/broken.png"] = b"not a png"
    files["cell_images/Thumbs.db"] = b"ignored"
    return files


@pytest.fixture
def cell_zip(tmp_path: Path) -> Path:
    path = tmp_path / "malaria" / "cell_images.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, payload in _cells(20).items():
            archive.writestr(name, payload)
    return path


@pytest.fixture
def cell_folder(tmp_path: Path) -> Path:
    root = tmp_path / "unpacked"
    for name, payload in _cells(20).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(payload)
    return root


def test_zip_cells_become_rgb_at_the_requested_size(cell_zip: Path) -> None:
    data = load_malaria(cell_zip, 16, seed=0)
    images = np.concatenate([split.images for split in data.splits.values()])
    labels = np.concatenate([split.labels for split in data.splits.values()])
    assert images.shape == (40, 16, 16, 3) and images.dtype == np.uint8
    assert data.skipped == 1
    # Parasitized cells were drawn at grey 60 and uninfected at 200, whatever the mode.
    assert np.all(np.abs(images[labels == 0].astype(int) - 60) <= 1)
    assert np.all(np.abs(images[labels == 1].astype(int) - 200) <= 1)


def test_folder_and_zip_give_the_same_cells(cell_zip: Path, cell_folder: Path) -> None:
    from_zip = load_malaria(cell_zip, 16, seed=3)
    from_folder = load_malaria(cell_folder, 16, seed=3)
    for name in ("train", "validation", "test"):
        assert from_zip.splits[name].names == from_folder.splits[name].names
        np.testing.assert_array_equal(from_zip.splits[name].images, from_folder.splits[name].images)


def test_data_root_folder_and_zip_resolve_to_the_same_source(cell_zip: Path) -> None:
    assert resolve_zip_or_folder(cell_zip) == cell_zip
    assert resolve_zip_or_folder(cell_zip.parent) == cell_zip
    assert resolve_zip_or_folder(cell_zip.parent.parent) == cell_zip


def test_stored_bytes_are_the_original_pngs(cell_zip: Path) -> None:
    data = load_malaria(cell_zip, 16, seed=0)
    split = data.splits["train"]
    with zipfile.ZipFile(cell_zip) as archive:
        assert split.stored_bytes[0] == archive.read(split.names[0])


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        load_malaria(tmp_path / "nowhere", 16)


def test_folder_without_cells_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "cell_images" / "Parasitized").mkdir(parents=True)
    with pytest.raises(DataError, match=str(tmp_path)):
        load_malaria(tmp_path, 16)


def test_non_zip_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "cells.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match="cells.txt"):
        load_malaria(path, 16)


def test_split_is_stratified_disjoint_complete_and_seeded() -> None:
    labels = np.array([0] * 300 + [1] * 100)
    split = stratified_split(labels, seed=1)
    everything = np.concatenate(list(split.values()))
    assert sorted(everything.tolist()) == list(range(400))
    for indices in split.values():
        assert labels[indices].mean() == pytest.approx(0.25, abs=0.02)
    assert len(split["test"]) == 40 and len(split["validation"]) == 40
    again = stratified_split(labels, seed=1)
    other = stratified_split(labels, seed=2)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(split["test"], other["test"])


def test_subsampling_never_moves_a_cell_between_splits() -> None:
    labels = np.array([0, 1] * 500)
    split = stratified_split(labels, seed=0)
    small_test = subsample(split["test"], labels, 0.1, seed=0)
    assert set(small_test) <= set(split["test"])
    assert len(small_test) == 10 and labels[small_test].sum() == 5


def test_bad_image_size_is_refused(cell_zip: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        load_malaria(cell_zip, 2)


def test_tfds_source_goes_through_tfds_load_and_takes_rgb_of_any_size() -> None:
    """``tfds.testing.mock_data`` answers ``tfds.load("malaria")`` with generated examples
    of the real feature spec (RGB, varying height and width) without a download."""
    with tfds.testing.mock_data(num_examples=20):
        data = load_malaria(None, 16, seed=0)
    assert data.source == "tfds:malaria"
    assert sum(data.summary()["split_sizes"].values()) == 20
    for split in data.splits.values():
        assert split.images.shape[1:] == (16, 16, 3) and split.images.dtype == np.uint8
        assert all(raw.startswith(b"\x89PNG") for raw in split.stored_bytes)


def test_tfds_failure_is_one_data_error(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(DataError, match="cannot load tfds malaria .*no route to host"):
        load_malaria(None, 16, seed=0)


# A user's own cells: any folder or zip, recursively; first-level folders are the labels.


def _user_cells(tmp_path: Path) -> Path:
    return image_folders.write_cells(tmp_path / "cells", {"round": 12, "spiky": 9}, unlabelled=6)


def test_user_cells_are_read_recursively_with_first_level_labels(tmp_path: Path) -> None:
    root = _user_cells(tmp_path)
    (root / "spiky" / "broken.png").write_bytes(b"not a png")
    cells = load_malaria(root, image_size=24, seed=0)
    assert not cells.nih
    assert cells.label_names == ("round", "spiky")
    everything = np.concatenate([split.labels for split in cells.splits.values()])
    assert np.bincount(everything + 1).tolist() == [6, 12, 9]  # unlabelled, round, spiky
    assert cells.skipped == 1
    assert all(len(split.labels) for split in cells.splits.values())
    assert cells.splits["train"].images.shape[1:] == (24, 24, 3)
    assert any(name.startswith("round/slide2/") for name in cells.splits["train"].names)
    summary = cells.summary()
    assert summary["label_names"] == ["round", "spiky"]
    assert sum(summary["unlabelled"].values()) == 6


@pytest.mark.parametrize("top", [None, "my_cells"])
def test_a_zip_of_user_cells_gives_the_same_listing_as_the_folder(
    tmp_path: Path, top: str | None
) -> None:
    root = _user_cells(tmp_path)
    archive = image_folders.zip_folder(root, tmp_path / "cells.zip", top)
    from_folder, from_zip = list_cells(root), list_cells(archive)
    assert from_zip.names == from_folder.names
    assert from_zip.label_names == from_folder.label_names
    assert from_zip.labels.tolist() == from_folder.labels.tolist()


def test_unlabelled_cells_alone_are_fine(tmp_path: Path) -> None:
    root = image_folders.write_cells(tmp_path / "cells", {}, unlabelled=10)
    cells = load_malaria(root, image_size=16, seed=0)
    assert cells.label_names == ()
    assert cells.label_of(-1) == ""


def test_too_few_user_cells_is_one_line_naming_the_folder(tmp_path: Path) -> None:
    root = image_folders.write_cells(tmp_path / "cells", {}, unlabelled=2)
    with pytest.raises(DataError, match=r"cells: 2 cell image\(s\) leave the .* split empty"):
        load_malaria(root, image_size=16, seed=0)


def test_an_empty_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"no cell images .* in {tmp_path}"):
        load_malaria(tmp_path, image_size=16, seed=0)


def test_nih_only_refuses_a_user_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no cell_images/ folder"):
        load_malaria(_user_cells(tmp_path), image_size=16, seed=0, nih_only=True)


def test_the_nih_layout_keeps_its_labels(cell_zip: Path) -> None:
    cells = load_malaria(cell_zip, image_size=16, seed=0)
    assert cells.nih
    assert cells.label_names == ("parasitized", "uninfected")
