"""Where a model version lives: ``<models>/<model name>/<version>/`` and the files in it.

The layout is TF Serving's: one folder per model, numbered version folders inside. A writer
builds a version under a hidden ``.tmp-*`` name and renames it into place when complete,
so only all-digit folder names count as versions.
"""

from __future__ import annotations

from pathlib import Path

CLASSIFIER = "signs_classifier"
AUTOENCODER = "malaria_autoencoder"
INDEX = "malaria_index"

METADATA_FILE = "metadata.json"
REPORT_DIR = "report"  # human-facing plots and JSON; never read by the server
INDEX_FILE = "index.faiss"
GALLERY_FILE = "gallery.npz"  # ids, labels and offsets into GALLERY_IMAGES_FILE
GALLERY_IMAGES_FILE = "gallery_images.bin"  # the gallery cells' PNG bytes, concatenated


def versions(model_root: Path) -> list[int]:
    """Complete version numbers under ``model_root``, oldest first (temporary folders and
    files ignored; a missing folder has none)."""
    if not model_root.is_dir():
        return []
    return sorted(
        int(path.name) for path in model_root.iterdir() if path.is_dir() and path.name.isdigit()
    )
