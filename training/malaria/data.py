"""Cell images: find them, split them by label and seed, decode only what is used.

Cells come from the NIH layout (``cell_images/Parasitized/*.png``,
``cell_images/Uninfected/*.png``) in a zip or a folder, from ``tfds.load("malaria")``
when no path is given, or from a user's own folder (or zip) of cell images: searched
recursively, any format, size or colour mode; the first-level sub-folder a cell sits in
names its label, and cells straight in the folder are unlabelled.

The split is made on the full listing *before* any subsetting, so a quick run and a full
run agree on which cells are held out: test cells never reach training,
tuning, early stopping or the retrieval gallery.

Decoding is serial on purpose: 22k 50x50 PNGs decode in about 2.5 s on one core, and a
thread pool measured slower (PIL holds the GIL for these tiny files).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import DataError
from training.images import UnreadableImageError, decode_rgb

LABEL_NAMES = ("parasitized", "uninfected")  # tfds "malaria" label order
_FOLDER_LABELS = {"parasitized": 0, "uninfected": 1}
SPLIT_NAMES = ("train", "validation", "test")
MIN_CELLS = 3  # per label: one each for train, validation and test
UNLABELLED = -1  # label index of a cell outside any sub-folder; its gallery label is ""
CELL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
NIH_DESCRIPTION = "blood-smear cell images like the NIH malaria data"


@dataclass(frozen=True)
class CellListing:
    """Every cell's name and label, and a way to read its stored (encoded) bytes."""

    names: list[str]
    labels: np.ndarray
    source: str
    read_bytes: Callable[[int], bytes]
    label_names: tuple[str, ...] = LABEL_NAMES
    nih: bool = True  # the NIH layout (or tfds): its own label names and OOD description


@dataclass(frozen=True)
class CellSplit:
    """Decoded cells of one split: uint8 ``(N, S, S, 3)`` plus their stored PNG bytes."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    stored_bytes: list[bytes]


@dataclass(frozen=True)
class MalariaData:
    splits: dict[str, CellSplit]
    source: str
    image_size: int
    skipped: int
    label_names: tuple[str, ...] = LABEL_NAMES
    nih: bool = True

    def label_of(self, label: int) -> str:
        """A label index's name; ``""`` for an unlabelled cell."""
        return self.label_names[label] if label >= 0 else ""

    def summary(self) -> dict[str, object]:
        """What the metadata records about the data a model saw."""
        return {
            "dataset": "malaria" if self.nih else "cell folders",
            "source": self.source,
            "image_size": self.image_size,
            "label_names": list(self.label_names),
            "skipped_unreadable": self.skipped,
            "split_sizes": {name: len(split.labels) for name, split in self.splits.items()},
            "unlabelled": {
                name: int((split.labels == UNLABELLED).sum()) for name, split in self.splits.items()
            },
        }


def resolve_zip_or_folder(data: Path) -> Path:
    """Accept the zip itself, a folder holding ``cell_images/``, ``cell_images/`` itself,
    or a data root holding ``malaria/cell_images.zip`` (or ``malaria/cell_images/``)."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"malaria data not found: {data}")
    if data.is_file():
        if not zipfile.is_zipfile(data):
            raise DataError(f"malaria data is not a zip file: {data}")
        return data
    for candidate in (
        data / "cell_images",
        data / "cell_images.zip",
        data / "malaria" / "cell_images",
        data / "malaria" / "cell_images.zip",
    ):
        if candidate.exists():
            return candidate.parent if candidate.is_dir() else candidate
    if data.name == "cell_images":
        return data.parent
    raise DataError(f"no cell_images/ folder or cell_images.zip under {data}")


def _label_of(path_parts: Sequence[str]) -> int | None:
    """``.../cell_images/<Label>/<file>.png`` -> label index, anything else -> None."""
    if len(path_parts) < 3 or path_parts[-3] != "cell_images":
        return None
    if not path_parts[-1].lower().endswith(".png"):
        return None
    return _FOLDER_LABELS.get(path_parts[-2].lower())


def list_zip(path: Path) -> CellListing:
    archive = zipfile.ZipFile(path)
    members = sorted(
        (
            (info, label)
            for info in archive.infolist()
            if (label := _label_of(info.filename.split("/"))) is not None
        ),
        key=lambda member: member[0].filename,
    )
    return CellListing(
        names=[info.filename for info, _ in members],
        labels=np.array([label for _, label in members], dtype=np.int64),
        source=str(path),
        read_bytes=lambda i: archive.read(members[i][0]),
    )


def list_folder(root: Path) -> CellListing:
    files = sorted(
        (file, label)
        for file in (root / "cell_images").glob("*/*")
        if (label := _label_of(file.parts)) is not None
    )
    return CellListing(
        names=[str(file.relative_to(root)) for file, _ in files],
        labels=np.array([label for _, label in files], dtype=np.int64),
        source=str(root),
        read_bytes=lambda i: files[i][0].read_bytes(),
    )


def list_tfds() -> CellListing:
    """Download (once) and list ``tfds.load("malaria")``; images are kept as PNG bytes."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        dataset = tfds.load("malaria", split="train", as_supervised=True)
    except Exception as error:  # network, disk or registry trouble: one line for the CLI
        raise DataError(f"cannot load tfds malaria (no --data given): {error}") from error
    encoded, labels = [], []
    for image, label in dataset:
        encoded.append(tf.io.encode_png(image).numpy())
        labels.append(int(label))
    return CellListing(
        names=[f"malaria/train/{i}" for i in range(len(encoded))],
        labels=np.array(labels, dtype=np.int64),
        source="tfds:malaria",
        read_bytes=lambda i: encoded[i],
    )


def _is_cell_file(name: str) -> bool:
    parts = name.split("/")
    return name.lower().endswith(CELL_SUFFIXES) and not any(p.startswith(".") for p in parts)


def _labelled_listing(
    relative: list[str], source: str, read_bytes: Callable[[int], bytes]
) -> CellListing:
    """A user's cells from their paths relative to the root (sorted): ``<label>/.../file``
    is labelled by its first folder, ``file`` is unlabelled."""
    label_names = tuple(sorted({name.split("/")[0] for name in relative if "/" in name}))
    index = {name: position for position, name in enumerate(label_names)}
    labels = [index[name.split("/")[0]] if "/" in name else UNLABELLED for name in relative]
    return CellListing(
        names=relative,
        labels=np.array(labels, dtype=np.int64),
        source=source,
        read_bytes=read_bytes,
        label_names=label_names,
        nih=False,
    )


def list_user_folder(root: Path) -> CellListing:
    """Every cell image under ``root``, recursively (hidden files and folders skipped)."""
    files = sorted(
        path
        for path in root.rglob("*")
        if _is_cell_file(path.relative_to(root).as_posix()) and path.is_file()
    )
    relative = [path.relative_to(root).as_posix() for path in files]
    return _labelled_listing(relative, str(root), lambda i: files[i].read_bytes())


def list_user_zip(path: Path) -> CellListing:
    """The same layout in a zip. A zip whose members all sit in one top folder (what
    zipping the folder itself gives) is read from inside that folder, so its label folders
    are the ones below it."""
    archive = zipfile.ZipFile(path)
    members = sorted(
        (info for info in archive.infolist() if not info.is_dir() and _is_cell_file(info.filename)),
        key=lambda info: info.filename,
    )
    names = [info.filename for info in members]
    tops = {name.split("/")[0] for name in names}
    if len(tops) == 1 and all("/" in name for name in names):
        names = [name.split("/", 1)[1] for name in names]
    return _labelled_listing(names, str(path), lambda i: archive.read(members[i]))


def list_cells(data: Path | None, *, nih_only: bool = False) -> CellListing:
    """The NIH layout (or tfds without ``data``) when ``data`` holds it; otherwise, unless
    ``nih_only``, any folder or zip of cell images."""
    if data is None:
        listing = list_tfds()
    else:
        try:
            location = resolve_zip_or_folder(data)
        except DataError:
            usable = Path(data).is_dir() or zipfile.is_zipfile(data)  # else: missing, no zip
            if nih_only or not usable:
                raise
            location = None
        if location is not None:
            listing = list_zip(location) if location.is_file() else list_folder(location)
        if location is None or (not listing.names and not nih_only):
            listing = list_user_zip(data) if Path(data).is_file() else list_user_folder(data)
    if not listing.names:
        raise DataError(f"no cell images ({', '.join(CELL_SUFFIXES)}) in {listing.source}")
    return listing


def stratified_split(
    labels: np.ndarray, seed: int, validation_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, np.ndarray]:
    """Seeded per-label shuffle cut into train / validation / test index arrays."""
    if not 0 < validation_fraction + test_fraction < 1:
        raise ValueError("validation and test fractions must be positive and sum below 1")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        # A label of 3+ cells gives each split at least one (the NIH labels are far larger).
        least = 1 if len(members) >= 3 else 0
        n_test = max(least, round(len(members) * test_fraction))
        n_validation = max(least, round(len(members) * validation_fraction))
        parts["test"].append(members[:n_test])
        parts["validation"].append(members[n_test : n_test + n_validation])
        parts["train"].append(members[n_test + n_validation :])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def subsample(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Keep ``fraction`` of each label's indices (at least one each), seeded."""
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels[indices]):
        members = indices[labels[indices] == label]
        kept.append(rng.choice(members, size=max(1, round(len(members) * fraction)), replace=False))
    return np.sort(np.concatenate(kept))


def decode_split(
    listing: CellListing, indices: np.ndarray, image_size: int
) -> tuple[CellSplit, int]:
    """Decode the chosen cells to ``image_size`` RGB; unreadable ones are skipped and counted."""
    images, labels, names, stored = [], [], [], []
    skipped = 0
    for index in indices:
        raw = listing.read_bytes(int(index))
        try:
            images.append(decode_rgb(raw, listing.names[index], (image_size, image_size)))
        except UnreadableImageError:
            skipped += 1
            continue
        labels.append(listing.labels[index])
        names.append(listing.names[index])
        stored.append(raw)
    shape = (len(images), image_size, image_size, 3)
    array = np.stack(images) if images else np.zeros(shape, dtype=np.uint8)
    return CellSplit(array, np.array(labels, dtype=np.int64), names, stored), skipped


def load_malaria(
    data: Path | None,
    image_size: int,
    *,
    seed: int = 0,
    fraction: float = 1.0,
    splits: Sequence[str] = SPLIT_NAMES,
    nih_only: bool = False,
) -> MalariaData:
    """List, split (on the full listing), optionally subsample, then decode ``splits``.

    ``nih_only`` reads only the NIH layout (the classifier's OOD negatives: a user's own
    folder is never taken for cells)."""
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    listing = list_cells(data, nih_only=nih_only)
    split_indices = stratified_split(listing.labels, seed)
    for name in splits:
        if len(split_indices[name]) == 0:
            raise DataError(
                f"{listing.source}: {len(listing.names)} cell image(s) leave the {name} split"
                f" empty; each label (and the unlabelled cells) needs at least {MIN_CELLS}"
            )
    decoded: dict[str, CellSplit] = {}
    skipped = 0
    for name in splits:
        indices = split_indices[name]
        if fraction < 1:
            indices = subsample(indices, listing.labels, fraction, seed)
        decoded[name], split_skipped = decode_split(listing, indices, image_size)
        skipped += split_skipped
        if len(decoded[name].labels) == 0:
            raise DataError(f"no readable cell images for the {name} split in {listing.source}")
    return MalariaData(
        decoded, listing.source, image_size, skipped, listing.label_names, listing.nih
    )
