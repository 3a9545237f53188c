"""Load the classifier's images and split them into train, validation and test.

Four sources: one sub-folder per class (``DIR/<class>/*.jpg``, the layout image toolkits
use: any class names, any sizes and formats), a folder of SIGNS ``{label}_IMG_{id}.jpg``
files, the course's HDF5 files (``train_signs.h5`` / ``test_signs.h5``), or a download of
those HDF5 files. Class names travel with the images and become the served labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from contract.pixels import rgb_pixels
from training.errors import DataError
from training.images import UnreadableImageError, decode_rgb

log = logging.getLogger(__name__)

CLASS_NAMES = [str(digit) for digit in range(6)]
TRAIN_FILE = "train_signs.h5"
TEST_FILE = "test_signs.h5"
# Pinned commits of public copies of the course files, tried in order.
DOWNLOAD_MIRRORS = [
    "https://raw.githubusercontent.com/itsayushthada/Residual-Networks/"
    "e7f3097c4126cc2ab670e057ed24c284cb664e15/datasets/",
    "https://raw.githubusercontent.com/ironmanciti/ML_Based_BigData_Analysis_Visualization/"
    "a5b3434c6a3efab4b981bae6a68f616e17391288/datasets/",
]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# The stratified split puts at least one image of every class into train, validation and
# test; a class with fewer cannot be split (nor scored).
MIN_IMAGES_PER_CLASS = 3


@dataclass
class SignsData:
    """uint8 images ``(N, S, S, 3)`` with integer labels, and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    skipped: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    layout: str = "SIGNS files"  # or "class folders", "HDF5"

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> SignsData:
        return SignsData(
            self.images[indices],
            self.labels[indices],
            self.source,
            class_names=self.class_names,
            layout=self.layout,
        )


@dataclass
class SignsSplits:
    """Train (fitting), validation (early stopping) and held-out test (final score only)."""

    train: SignsData
    validation: SignsData
    test: SignsData
    skipped: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ("train", "validation", "test")}

    @property
    def class_names(self) -> list[str]:
        """Class index -> name, in the order the model's outputs follow."""
        return self.train.class_names

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split (the report shows how imbalanced the data is)."""
        return {
            split: {
                name: int(count)
                for name, count in zip(
                    self.class_names,
                    np.bincount(getattr(self, split).labels, minlength=len(self.class_names)),
                    strict=True,
                )
            }
            for split in ("train", "validation", "test")
        }


def load_signs_folder(folder: Path, image_size: int) -> SignsData:
    """Read every ``{label}_IMG_{id}.jpg``; unreadable files are skipped, counted and logged."""
    if not folder.is_dir():
        raise DataError(f"SIGNS image folder not found: {folder}")
    images, labels, skipped = [], [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        label = _label_from_name(path)
        try:
            images.append(decode_rgb(path.read_bytes(), str(path), (image_size, image_size)))
        except UnreadableImageError as error:
            log.warning("skipping %s", error)
            skipped.append(path.name)
            continue
        labels.append(label)
    if skipped:
        log.warning("skipped %d unreadable image(s) in %s", len(skipped), folder)
    if skipped and not images:
        raise DataError(f"no readable images in {folder}: all {len(skipped)} failed to decode")
    if not images:
        raise DataError(
            f"no images in {folder}: expected class sub-folders (DIR/<class>/*.jpg)"
            " or SIGNS files ({label}_IMG_{id}.jpg)"
        )
    return SignsData(np.stack(images), np.asarray(labels, dtype=np.int64), str(folder), skipped)


def class_folders(folder: Path) -> list[Path]:
    """``folder``'s visible sub-folders, sorted by name: one per class, in label order."""
    return sorted(
        child for child in folder.iterdir() if child.is_dir() and not child.name.startswith(".")
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def load_class_folders(folder: Path, image_size: int) -> SignsData:
    """Read ``folder/<class>/**/*.{jpg,png,...}``: each sub-folder's name is a class, sorted
    by name into label order. Unreadable files are skipped, counted and logged; every
    problem that would stop the split or the training is one ``DataError`` naming the place.
    """
    classes = class_folders(folder)
    if len(classes) < 2:
        found = f"only {classes[0].name!r}" if classes else "none"
        raise DataError(
            f"{folder}: need at least 2 class sub-folders (DIR/<class>/*.jpg), found {found}"
        )
    files = {path.name: _image_files(path) for path in classes}
    for path in classes:
        count = len(files[path.name])
        if count < MIN_IMAGES_PER_CLASS:
            raise DataError(
                f"{path}: {count} image file(s); each class needs at least "
                f"{MIN_IMAGES_PER_CLASS} for the train/validation/test split"
            )
    images, labels, skipped = [], [], []
    for label, path in enumerate(classes):
        readable = 0
        for file in files[path.name]:
            try:
                images.append(decode_rgb(file.read_bytes(), str(file), (image_size, image_size)))
            except (UnreadableImageError, OSError) as error:
                log.warning("skipping %s", error)
                skipped.append(str(file.relative_to(folder)))
                continue
            labels.append(label)
            readable += 1
        if readable < MIN_IMAGES_PER_CLASS:
            raise DataError(
                f"{path}: {readable} readable image(s) of {len(files[path.name])}; each class "
                f"needs at least {MIN_IMAGES_PER_CLASS} for the train/validation/test split"
            )
    if skipped:
        log.warning("skipped %d unreadable image(s) in %s", len(skipped), folder)
    return SignsData(
        np.stack(images),
        np.asarray(labels, dtype=np.int64),
        str(folder),
        skipped,
        [path.name for path in classes],
        "class folders",
    )


def is_class_folder_layout(folder: Path) -> bool:
    """True when ``folder`` holds sub-folders rather than SIGNS ``{label}_IMG_`` files."""
    return folder.is_dir() and bool(class_folders(folder))


def load_signs_h5(path: Path, image_size: int) -> SignsData:
    """Read a course HDF5 file; its datasets are ``train_set_*`` or ``test_set_*``."""
    if not path.is_file():
        raise DataError(f"SIGNS HDF5 file not found: {path}")
    try:
        with h5py.File(path, "r") as file:
            prefix = next((p for p in ("train_set", "test_set") if f"{p}_x" in file), None)
            if prefix is None or f"{prefix}_y" not in file:
                raise DataError(
                    f"{path} lacks train_set_x/train_set_y or test_set_x/test_set_y "
                    f"(found: {', '.join(sorted(file.keys())) or 'nothing'})"
                )
            raw_images = np.asarray(file[f"{prefix}_x"][:])
            labels = np.asarray(file[f"{prefix}_y"][:]).reshape(-1).astype(np.int64)
    except OSError as error:
        raise DataError(f"cannot read SIGNS HDF5 file {path}: {error}") from error
    if raw_images.ndim != 4 or raw_images.shape[-1] != 3 or len(raw_images) != len(labels):
        shape = raw_images.shape
        raise DataError(f"{path}: expected images (N, H, W, 3) and N labels, got {shape}")
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{path}: labels must be 0..{len(CLASS_NAMES) - 1}")
    images = _resize_all(raw_images.astype(np.uint8), image_size)
    return SignsData(images, labels, str(path), layout="HDF5")


def download_signs(cache_dir: Path | None = None) -> Path:
    """Fetch both course HDF5 files (cached by Keras) and return the folder holding them."""
    from keras.utils import get_file  # imported here: only users without local data need it

    if cache_dir is not None:  # Keras silently swaps a missing cache_dir for /tmp/.keras
        cache_dir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for mirror in DOWNLOAD_MIRRORS:
        try:
            paths = [
                Path(get_file(name, mirror + name, cache_dir=cache_dir, cache_subdir="signs"))
                for name in (TRAIN_FILE, TEST_FILE)
            ]
            return paths[0].parent
        except Exception as error:  # network errors come in many types; try the next mirror
            log.warning("SIGNS download from %s failed: %s", mirror, error)
            last_error = error
    raise DataError(f"cannot download SIGNS ({TRAIN_FILE}): {last_error}")


def load_signs(
    data: Path | None, image_size: int, seed: int, test_fraction: float = 0.15
) -> SignsSplits:
    """Resolve ``data`` (see :func:`find_signs_source`), load it and split it.

    When a separate ``test_signs.h5`` sits beside the training file it is the test set;
    otherwise a stratified ``test_fraction`` of the pool is held out.
    """
    source = find_signs_source(data) if data is not None else download_signs() / TRAIN_FILE
    if is_class_folder_layout(source):
        pool = load_class_folders(source, image_size)
        test = None
    elif source.is_dir():
        pool = load_signs_folder(source, image_size)
        test = None
    else:
        pool = load_signs_h5(source, image_size)
        test_file = source.with_name(TEST_FILE)
        has_test_file = source.name == TRAIN_FILE and test_file.is_file()
        test = load_signs_h5(test_file, image_size) if has_test_file else None
    return split_signs(pool, seed, test=test, test_fraction=test_fraction)


def find_signs_source(data: Path) -> Path:
    """Accept class folders, a folder of SIGNS jpgs, an ``.h5`` file, a folder with
    ``train_signs.h5``, or a data root holding ``signs/train`` (or ``signs/train_signs.h5``)."""
    if not data.exists():
        raise DataError(f"SIGNS data not found: {data}")
    if data.is_file():
        if data.suffix.lower() not in (".h5", ".hdf5"):
            raise DataError(
                f"{data} is not an HDF5 file (.h5), a folder of class folders or of SIGNS images"
            )
        return data
    return find_course_signs(data) or data


def find_course_signs(data: Path) -> Path | None:
    """The course's SIGNS data under ``data`` (``train_signs.h5``, ``signs/train``), if any:
    the malaria job's OOD negatives use only this, never a user's class folders."""
    for candidate in (data / TRAIN_FILE, data / "signs" / TRAIN_FILE, data / "signs" / "train"):
        if candidate.exists():
            return candidate
    return None


def split_signs(
    pool: SignsData, seed: int, *, test: SignsData | None = None, test_fraction: float = 0.15
) -> SignsSplits:
    """Seeded stratified split; validation is as large as the held-out test fraction."""
    if not 0 < test_fraction < 0.5:
        raise ValueError(f"test_fraction must be in (0, 0.5), got {test_fraction}")
    rng = np.random.default_rng(seed)
    fractions = [test_fraction] if test is not None else [test_fraction, test_fraction]
    parts = stratified_partition(pool.labels, fractions, rng)
    if test is None:
        train_idx, validation_idx, test_idx = parts
        test = pool.subset(test_idx)
    else:
        train_idx, validation_idx = parts
    return SignsSplits(pool.subset(train_idx), pool.subset(validation_idx), test, pool.skipped)


def stratified_partition(
    labels: np.ndarray, fractions: list[float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Indices of the remainder followed by one part per fraction, each class cut alike."""
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for part, fraction in enumerate(fractions, start=1):
            count = max(1, round(fraction * len(members))) if len(members) > len(fractions) else 0
            parts[part].append(members[start : start + count])
            start += count
        parts[0].append(members[start:])
    return [rng.permutation(np.concatenate(part)).astype(np.int64) for part in parts]


def _label_from_name(path: Path) -> int:
    prefix = path.name.split("_", 1)[0]
    if not prefix.isdigit() or int(prefix) >= len(CLASS_NAMES):
        raise DataError(f"{path}: name must start with a label 0-5, like 3_IMG_1234.jpg")
    return int(prefix)


def _resize_all(images: np.ndarray, image_size: int) -> np.ndarray:
    """HDF5 images are already uint8 RGB; resized as ``contract.pixels`` does, if needed."""
    if images.shape[1:3] == (image_size, image_size):
        return images
    return np.stack(
        [rgb_pixels(Image.fromarray(image), image_size, image_size) for image in images]
    )
