"""Train a tiny autoencoder end to end, then check both exported folders against the
README's model contract and the retrieval metrics."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import faiss
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from contract.layout import GALLERY_FILE, GALLERY_IMAGES_FILE
from training.errors import DataError
from training.malaria.data import CellSplit, load_malaria
from training.malaria.index import build_index, exact_neighbours, precision_at_k, write_gallery
from training.malaria.train import MalariaConfig, train_malaria
from training.options import JobOptions

SIZE = 16


def _cell(rng: np.random.Generator, parasitized: bool) -> bytes:
    """A bright disc on black, parasitized cells with a dark spot; every cell is unique."""
    yy, xx = np.mgrid[:20, :20]
    pixels = np.where((yy - 10) ** 2 + (xx - 10) ** 2 < 64, 180, 0) + rng.integers(0, 20, (20, 20))
    if parasitized:
        row, col = rng.integers(6, 12, 2)
        pixels[row : row + 3, col : col + 3] = 40
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cell_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "cell_images.zip"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for label in ("Parasitized", "Uninfected"):
            for n in range(60):
                archive.writestr(f"cell_images/{label}/{n}.png", _cell(rng, label == "Parasitized"))
    return path


@pytest.fixture(scope="module")
def models(cell_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    train_malaria(JobOptions(cell_zip, out, epochs=1, image_size=SIZE))
    build_index(JobOptions(cell_zip, out), approximate_above=10)
    return out


def test_autoencoder_folder_follows_the_contract(models: Path) -> None:
    version = models / "malaria_autoencoder" / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["input"] == {
        "height": SIZE,
        "width": SIZE,
        "channels": 3,
        "dtype": "float32",
        "scale": "pixel / 255",
    }
    assert set(metadata["signatures"]) == {
        "serving_default",
        "denoise",
        "encode",
        "encode_codes",
        "bottleneck",
    }
    assert {"data", "hyperparameters", "metrics", "code_dim", "commit"} <= set(metadata)
    assert "experiments" not in metadata  # the lab log lives in docs/, not in every model
    bottleneck = metadata["bottleneck"]  # the decoder's code is smaller than the input
    assert bottleneck["shape"] == [SIZE // 4, SIZE // 4, MalariaConfig.code_channels]
    assert bottleneck["values"] < bottleneck["input_values"] == SIZE * SIZE * 3
    assert metadata["data"]["split_sizes"] == {"train": 96, "validation": 12, "test": 12}
    report = version / "report"
    for name in (
        "config.json",
        "metrics.json",
        "learning_curves.png",
        "denoising_grid.png",
    ):
        assert (report / name).is_file()
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["denoise_sigma_0.1"]) == {"noisy", "denoised", "psnr_gain_db"}
    loaded = tf.saved_model.load(str(version))
    cells = tf.random.uniform([2, SIZE, SIZE, 3])
    codes = loaded.signatures["encode"](images=cells)["codes"]
    assert codes.shape == (2, metadata["code_dim"])
    codes_alone = loaded.signatures["encode_codes"](images=cells)
    assert set(codes_alone) == {"codes"}  # no OOD score: the index pays only for the codes
    np.testing.assert_allclose(codes_alone["codes"], codes, atol=1e-6)
    assert not (models / "malaria_autoencoder" / ".work").exists()


def test_index_folder_follows_the_contract(models: Path, cell_zip: Path) -> None:
    version = models / "malaria_index" / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["encoder"] == {"name": "malaria_autoencoder", "version": 1}
    index = faiss.read_index(str(version / "index.faiss"))
    assert index.ntotal == metadata["size"] == 96
    assert index.d == metadata["dimension"]
    assert metadata["index_type"] == "IndexHNSWFlat"  # 96 cells > approximate_above=10
    assert index.hnsw.efSearch == metadata["hyperparameters"]["hnsw_ef_search"] == 64
    assert 0.0 <= metadata["metrics"]["recall_at_10_vs_exact"] <= 1.0
    assert metadata["metrics"]["queries"] == 12
    assert metadata["metrics"]["validation"]["queries"] == 12  # reported apart from test
    assert 0.0 <= metadata["metrics"]["validation"]["precision_at_10"]["all"] <= 1.0
    baseline = metadata["metrics"]["bottleneck_baseline"]  # the lab's plain codes, beside
    assert baseline["shape"] == [SIZE // 4, SIZE // 4, MalariaConfig.code_channels]
    assert 0.0 <= baseline["validation"]["precision_at_10"]["all"] <= 1.0
    assert 0.0 <= baseline["precision_at_10"]["all"] <= 1.0
    assert "encode" in metadata["codes"]
    gallery = np.load(version / "gallery.npz")
    assert gallery["ids"].dtype == np.int64 and list(gallery["ids"]) == list(range(96))
    assert set(gallery["labels"]) == {"parasitized", "uninfected"}
    offsets = gallery["offsets"]
    assert offsets.dtype == np.int64 and len(offsets) == 97 and np.all(np.diff(offsets) > 0)
    blob = (version / "gallery_images.bin").read_bytes()
    assert offsets[-1] == len(blob)
    first = Image.open(io.BytesIO(blob[offsets[0] : offsets[1]]))
    assert first.format == "PNG"
    held_out = load_malaria(cell_zip, SIZE, splits=("test",)).splits["test"]
    gallery_pngs = {blob[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)}
    assert not gallery_pngs & set(held_out.stored_bytes)
    assert (version / "report" / "neighbours.png").is_file()


def test_index_without_an_encoder_is_a_data_error(cell_zip: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="malaria_autoencoder"):
        build_index(JobOptions(cell_zip, tmp_path))


def test_precision_counts_neighbours_sharing_the_query_label() -> None:
    gallery_labels = np.array([0, 0, 1, 1, 1])
    neighbours = np.array([[0, 1, 2, 3, 4] * 2, [2, 3, 4, 0, 1] * 2])
    result = precision_at_k(neighbours, gallery_labels, np.array([0, 1]))
    assert result["precision_at_1"] == {"all": 1.0, "parasitized": 1.0, "uninfected": 1.0}
    assert result["precision_at_5"]["parasitized"] == pytest.approx(0.4)
    assert result["precision_at_5"]["uninfected"] == pytest.approx(0.6)
    assert result["precision_at_10"]["all"] == pytest.approx(0.5)


def test_exact_neighbours_match_faiss_flat_search_best_first() -> None:
    rng = np.random.default_rng(3)
    gallery = rng.standard_normal((3000, 40)).astype(np.float32)
    queries = rng.standard_normal((1500, 40)).astype(np.float32)  # two blocks of queries
    flat = faiss.IndexFlatIP(40)
    flat.add(gallery)
    expected_scores, expected = flat.search(queries, 10)
    found = exact_neighbours(gallery, queries, 10)
    # the same scores in the same order (a near-tie may swap two rows under other rounding)
    found_scores = np.take_along_axis(queries @ gallery.T, found, axis=1)
    np.testing.assert_allclose(found_scores, expected_scores, atol=1e-4)
    assert (found == expected).mean() > 0.99
    assert exact_neighbours(gallery[:4], queries, 10).shape == (1500, 4)


def test_index_refuses_a_split_seed_other_than_the_encoders(models: Path, cell_zip: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        build_index(JobOptions(cell_zip, models, seed=1))


def test_precision_scores_labelled_queries_by_the_users_label_names() -> None:
    gallery_labels = np.array([-1, 0, 1])
    neighbours = np.array([[1, 0, 2], [0, 1, 2], [2, 1, 0]])
    result = precision_at_k(neighbours, gallery_labels, np.array([0, -1, 1]), ("a", "b"))
    assert result["precision_at_1"] == {"all": 1.0, "a": 1.0, "b": 1.0}  # the -1 query is out
    assert precision_at_k(neighbours, gallery_labels, np.full(3, -1), ("a", "b")) == {}


def test_gallery_labels_are_the_users_names_and_large_images_shrink(tmp_path: Path) -> None:
    def encoded(size: tuple[int, int], file_format: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("L", size, 90).save(buffer, format=file_format)
        return buffer.getvalue()

    small = encoded((40, 30), "PNG")
    stored = [small, encoded((1000, 500), "PNG"), encoded((64, 64), "JPEG")]
    gallery = CellSplit(np.zeros((3, 8, 8, 3), np.uint8), np.array([1, -1, 0]), ["x"] * 3, stored)
    write_gallery(tmp_path, gallery, ("round", "spiky"))
    npz = np.load(tmp_path / GALLERY_FILE)
    assert npz["labels"].tolist() == ["spiky", "", "round"]
    blob, offsets = (tmp_path / GALLERY_IMAGES_FILE).read_bytes(), npz["offsets"]
    images = [blob[offsets[i] : offsets[i + 1]] for i in range(3)]
    assert images[0] == small  # a small PNG is kept byte for byte
    sizes = [Image.open(io.BytesIO(image)).size for image in images]
    assert sizes == [(40, 30), (256, 128), (64, 64)]
    assert {Image.open(io.BytesIO(image)).format for image in images} == {"PNG"}
