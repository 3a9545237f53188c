"""Offline index versions with fewer cells, so that tests which encode a whole gallery (a
re-encoding after a new autoencoder version) stay short."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np


def write_index_subset(source: Path, destination: Path, cells: slice, version: int) -> Path:
    """Write ``destination`` as an offline index version holding ``source``'s ``cells``
    (their ids, labels, images and codes, in order), numbered ``version``."""
    destination.mkdir(parents=True)  # named MODEL_DIR/malaria_index/<version>: checked
    index = faiss.read_index(str(source / "index.faiss"))
    codes = index.reconstruct_n(0, index.ntotal)[cells]
    subset = (
        faiss.IndexFlatIP(index.d)
        if index.metric_type == faiss.METRIC_INNER_PRODUCT
        else (faiss.IndexFlatL2(index.d))
    )
    subset.add(np.ascontiguousarray(codes))
    faiss.write_index(subset, str(destination / "index.faiss"))
    with np.load(source / "gallery.npz", allow_pickle=False) as gallery:
        ids, labels, offsets = gallery["ids"], gallery["labels"], gallery["offsets"]
    images = (source / "gallery_images.bin").read_bytes()
    positions = range(len(ids))[cells]
    chunks = [images[offsets[p] : offsets[p + 1]] for p in positions]
    new_offsets = np.concatenate([[0], np.cumsum([len(chunk) for chunk in chunks])])
    (destination / "gallery_images.bin").write_bytes(b"".join(chunks))
    np.savez(
        destination / "gallery.npz",
        ids=ids[cells],
        labels=labels[cells],
        offsets=new_offsets.astype(np.int64),
    )
    metadata = json.loads((source / "metadata.json").read_text())
    metadata.update(version=version, size=len(positions), index_type=type(subset).__name__)
    (destination / "metadata.json").write_text(json.dumps(metadata))
    return destination


def shrink_index(model_dir: Path, cells: int, version: int = 1) -> None:
    """Replace ``malaria_index/<version>`` under ``model_dir`` by its first ``cells`` cells."""
    folder = model_dir / "malaria_index" / str(version)
    full = folder.with_name(f"{version}-full")
    folder.rename(full)
    write_index_subset(full, folder, slice(0, cells), version)
    shutil.rmtree(full)
