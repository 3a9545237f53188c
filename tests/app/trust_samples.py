"""Uploads for the trust tests: a real hand, a real cell, and things that are neither."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.paths import SHARED_DATA

SIGNS_IMAGE = SHARED_DATA / "signs" / "train" / "0_IMG_5864.jpg"
MALARIA_ZIP = SHARED_DATA / "malaria" / "cell_images.zip"


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(size: int = 64, seed: int = 0) -> bytes:
    """Uniform RGB noise: no model here was trained on anything like it."""
    return png(np.random.default_rng(seed).integers(0, 256, (size, size, 3)))


def require_data() -> None:
    """Skip where the shared data set is not beside the repository."""
    for path in (SIGNS_IMAGE, MALARIA_ZIP):
        if not path.exists():
            pytest.skip(f"no {path}")


def cell_png() -> bytes:
    with zipfile.ZipFile(MALARIA_ZIP) as cells:
        name = next(n for n in cells.namelist() if n.endswith(".png") and "Uninfected" in n)
        return cells.read(name)


def drop_ood_block(version_folder: Path) -> None:
    """Make a version look like one exported before OOD scores existed (metadata-wise)."""
    path = version_folder / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata.pop("ood", None)
    path.write_text(json.dumps(metadata))
