"""The FAISS gallery without TensorFlow: small synthetic index folders built here."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from app.core.errors import InvalidModelError, ModelUnavailableError
from app.core.index import (
    check_gallery_archive,
    check_index_file,
    check_matches_encoder,
    load_index,
)
from tests.app.model_files import claim_huge_flat_index, zip_bomb_gallery

CODES = np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]], np.float32)
PNGS = [b"\x89PNG-a", b"\x89PNG-bb", b"\x89PNG-ccc"]


def write_index(folder: Path, index: faiss.Index, **metadata: object) -> Path:
    folder.mkdir(parents=True)
    faiss.write_index(index, str(folder / "index.faiss"))
    offsets = np.concatenate([[0], np.cumsum([len(png) for png in PNGS])]).astype(np.int64)
    np.savez(
        folder / "gallery.npz",
        ids=np.array([10, 20, 30], np.int64),
        labels=np.array(["a", "b", "c"]),
        offsets=offsets,
    )
    (folder / "gallery_images.bin").write_bytes(b"".join(PNGS))
    fields = {"name": "malaria_index", "version": 1, **metadata}
    (folder / "metadata.json").write_text(json.dumps(fields))
    return folder


def cosine_index(tmp_path: Path) -> Path:
    index = faiss.IndexFlatIP(3)
    index.add(CODES / np.linalg.norm(CODES, axis=1, keepdims=True))
    return write_index(tmp_path / "malaria_index" / "1", index, metric="cosine", dimension=3)


def test_cosine_search_normalises_the_query_and_reports_cosine_distance(tmp_path: Path) -> None:
    gallery = load_index(cosine_index(tmp_path))
    neighbours = gallery.search(np.array([10.0, 0.0, 0.0]), 2)  # length must not matter
    assert [n.id for n in neighbours] == [10, 30]
    assert neighbours[0].distance == pytest.approx(0.0, abs=1e-6)
    assert neighbours[1].distance == pytest.approx(0.4, abs=1e-6)  # 1 - cos = 1 - 0.6
    assert neighbours[1].label == "c"


def test_l2_search_reports_euclidean_distance(tmp_path: Path) -> None:
    index = faiss.IndexFlatL2(3)
    index.add(CODES)
    gallery = load_index(write_index(tmp_path / "malaria_index" / "1", index, metric="l2"))
    nearest = gallery.search(np.array([0.0, 0.0, 0.0]), 1)[0]
    assert nearest.distance == pytest.approx(1.0)


def test_k_larger_than_the_gallery_returns_the_whole_gallery(tmp_path: Path) -> None:
    gallery = load_index(cosine_index(tmp_path))
    assert len(gallery.search(CODES[0], 100)) == 3


def test_images_are_found_by_id_and_unknown_ids_give_none(tmp_path: Path) -> None:
    gallery = load_index(cosine_index(tmp_path))
    assert gallery.image_png(20) == PNGS[1]
    assert gallery.image_png(30) == PNGS[2]
    assert gallery.image_png(1) is None
    assert gallery.image_png(-10) is None


def test_a_query_of_the_wrong_length_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="index expects 3"):
        load_index(cosine_index(tmp_path)).search(np.zeros(4), 1)


def test_inconsistent_gallery_files_refuse_the_version(tmp_path: Path) -> None:
    folder = cosine_index(tmp_path)
    (folder / "gallery_images.bin").write_bytes(b"short")
    with pytest.raises(InvalidModelError, match="offsets do not fit"):
        load_index(folder)


def test_missing_index_file_refuses_the_version(tmp_path: Path) -> None:
    folder = cosine_index(tmp_path)
    (folder / "index.faiss").unlink()
    with pytest.raises(InvalidModelError, match="cannot read index files"):
        load_index(folder)


def test_encoder_dimension_check(tmp_path: Path) -> None:
    gallery = load_index(cosine_index(tmp_path))
    check_matches_encoder(gallery, 3, "encoder v1")
    with pytest.raises(InvalidModelError, match="index dimension 3 does not match encoder v1"):
        check_matches_encoder(gallery, 64, "encoder v1")


def test_an_index_header_claiming_more_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    """faiss would allocate the claimed 200M x 3 floats (2.4 GB) before reading them."""
    folder = cosine_index(tmp_path)
    claim_huge_flat_index(folder, 200_000_000)
    with pytest.raises(InvalidModelError, match="header claims 2400000000 bytes"):
        load_index(folder)


def test_index_headers_of_every_type_training_writes_pass(tmp_path: Path) -> None:
    codes = np.random.default_rng(0).random((50, 8), dtype=np.float32)
    for name, index in (
        ("flat-ip", faiss.IndexFlatIP(8)),
        ("flat-l2", faiss.IndexFlatL2(8)),
        ("hnsw", faiss.IndexHNSWFlat(8, 4, faiss.METRIC_INNER_PRODUCT)),
    ):
        index.add(codes)
        faiss.write_index(index, str(tmp_path / name))
        check_index_file(tmp_path / name)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(8), 8, 2)
    ivf.train(codes)
    faiss.write_index(ivf, str(tmp_path / "ivf"))
    with pytest.raises(InvalidModelError, match="unsupported index type"):
        check_index_file(tmp_path / "ivf")
    hnsw = (tmp_path / "hnsw").read_bytes()
    (tmp_path / "cut").write_bytes(hnsw[: len(hnsw) // 2])
    with pytest.raises(InvalidModelError, match="header claims|truncated"):
        check_index_file(tmp_path / "cut")


def test_a_gallery_zip_bomb_is_refused_from_its_directory(tmp_path: Path) -> None:
    folder = cosine_index(tmp_path)
    zip_bomb_gallery(folder, "labels.npy", 20)
    with pytest.raises(InvalidModelError, match="larger than 3 entries can need"):
        load_index(folder)
    check_gallery_archive(folder / "gallery.npz", 30_000)  # 20 MB of labels fit 30k entries
    with pytest.raises(InvalidModelError, match="labels.npy unpacks to 20971"):
        check_gallery_archive(folder / "gallery.npz", 10_000)


def test_a_gallery_file_changed_on_disk_is_a_503_not_a_crash(tmp_path: Path) -> None:
    folder = cosine_index(tmp_path)
    gallery = load_index(folder)
    images = folder / "gallery_images.bin"
    images.write_bytes(PNGS[0])  # truncated in place: the same inode, shorter
    assert gallery.image_png(10) == PNGS[0]
    with pytest.raises(ModelUnavailableError, match="changed on disk"):
        gallery.image_png(30)
    images.write_bytes(b"garbage!" * 4)  # overwritten in place with other bytes
    with pytest.raises(ModelUnavailableError, match="changed on disk"):
        gallery.image_png(10)
