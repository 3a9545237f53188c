"""Make variants of a trained models folder: new versions, broken ones, mismatched indexes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np


def copy_models(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def clone_version(model_dir: Path, name: str, source: int, target: int) -> Path:
    """Copy ``name/<source>`` to ``name/<target>`` with its metadata renumbered."""
    folder = model_dir / name / str(target)
    shutil.copytree(model_dir / name / str(source), folder)
    edit_metadata(folder, version=target)
    return folder


def edit_metadata(folder: Path, **changes: object) -> None:
    path = folder / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata.update(changes)
    path.write_text(json.dumps(metadata))


def corrupt_saved_model(folder: Path) -> None:
    (folder / "saved_model.pb").write_bytes(b"this is not a protocol buffer")


def rebuild_index_with_dimension(folder: Path, dimension: int) -> None:
    """Replace ``index.faiss`` by an index of another dimension (same size, random codes)."""
    size = faiss.read_index(str(folder / "index.faiss")).ntotal
    index = faiss.IndexFlatL2(dimension)
    index.add(np.random.default_rng(0).random((size, dimension), dtype=np.float32))
    faiss.write_index(index, str(folder / "index.faiss"))
    edit_metadata(folder, dimension=dimension, index_type="IndexFlatL2", metric="l2")
