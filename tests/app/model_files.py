"""Make variants of a trained models folder: new versions, broken ones, mismatched indexes."""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
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


def claim_huge_flat_index(folder: Path, ntotal: int) -> None:
    """Rewrite the flat ``index.faiss`` header (and its vector's length) to claim ``ntotal``
    codes; the data stays as small as it was."""
    path = folder / "index.faiss"
    data = bytearray(path.read_bytes())
    if data[:4] not in (b"IxFI", b"IxF2"):
        raise ValueError(f"{path} is not a flat index")
    (dimension,) = struct.unpack_from("<i", data, 4)
    struct.pack_into("<q", data, 8, ntotal)
    struct.pack_into("<Q", data, 4 + 33, ntotal * dimension)  # after fourcc and header
    path.write_bytes(bytes(data))


def zip_bomb_gallery(folder: Path, member: str, megabytes: int) -> None:
    """Replace ``member`` of ``gallery.npz`` by ``megabytes`` MB of deflated zeros (a few
    hundred KB on disk) behind a valid .npy header."""
    path = folder / "gallery.npz"
    with zipfile.ZipFile(path) as archive:
        kept = {name: archive.read(name) for name in archive.namelist() if name != member}
    size = megabytes * 1024 * 1024
    header = b"\x93NUMPY\x01\x00" + _npy_header(
        f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({size},), }}"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in kept.items():
            archive.writestr(name, data)
        with archive.open(member, "w", force_zip64=True) as out:
            out.write(header)
            chunk = bytes(1024 * 1024)
            for _ in range(megabytes):
                out.write(chunk)


def _npy_header(text: str) -> bytes:
    padded = text + " " * (-(len(text) + 11) % 64) + "\n"
    return struct.pack("<H", len(padded)) + padded.encode("latin1")


def file_io_classifier(model_dir: Path, version: int, written: Path) -> Path:
    """A classifier version whose ``serving_default`` writes ``written`` and reads it back on
    every call, with outputs that pass every shape check (uniform probabilities)."""
    import tensorflow as tf

    class FileTouchingModel(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.float32)])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            count = tf.shape(images)[0]
            tf.io.write_file(str(written), tf.strings.as_string(count))
            length = tf.cast(tf.strings.length(tf.io.read_file(str(written))), tf.float32)
            return {"probabilities": tf.ones([count, 6]) / 6.0 + 0.0 * length}

    folder = model_dir / "signs_classifier" / str(version)
    module = FileTouchingModel()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    shutil.copy(model_dir / "signs_classifier" / "1" / "metadata.json", folder)
    edit_metadata(folder, version=version)
    return folder
