"""Small image-folder datasets for the training tests: class folders and cell folders.

Every image is drawn from its class's colour and a pattern (so a model can learn it in a
few epochs) and written in a mix of sizes, colour modes and formats, as a user's folders
would hold them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# (suffix, Pillow format, mode) in turn: every format the loaders accept, grey and colour.
FORMATS = (
    (".jpg", "JPEG", "RGB"),
    (".png", "PNG", "L"),
    (".bmp", "BMP", "RGB"),
    (".gif", "GIF", "P"),
    (".webp", "WEBP", "RGB"),
    (".tif", "TIFF", "RGBA"),
    (".jpeg", "JPEG", "L"),
)
SIZES = ((40, 40), (64, 48), (23, 31), (120, 90))
COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40))


def picture(class_index: int, index: int, size: tuple[int, int]) -> Image.Image:
    """A noisy image of the class's colour, with stripes whose direction marks the class."""
    rng = np.random.default_rng(class_index * 1000 + index)
    width, height = size
    base = np.array(COLOURS[class_index % len(COLOURS)], dtype=np.float32)
    pixels = np.broadcast_to(base, (height, width, 3)).copy()
    grid = (
        np.indices((height, width)).sum(axis=0)
        if class_index % 2
        else np.indices((height, width))[0]
    )
    pixels[(grid // 4) % 2 == 0] *= 0.5
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def save(image: Image.Image, path: Path, format_index: int) -> Path:
    suffix, file_format, mode = FORMATS[format_index % len(FORMATS)]
    path = path.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert(mode).save(path, format=file_format)
    return path


def write_class_folders(root: Path, counts: dict[str, int], nested: bool = False) -> Path:
    """``root/<class>/*``: ``counts`` images per class name, in every format, size and mode;
    with ``nested`` half of each class sits one folder deeper."""
    for class_index, (name, count) in enumerate(counts.items()):
        for index in range(count):
            folder = root / name / ("more" if nested and index % 2 else "")
            image = picture(class_index, index, SIZES[index % len(SIZES)])
            save(image, folder / f"img{index:03d}", index + class_index)
    return root


def write_cells(root: Path, labelled: dict[str, int], unlabelled: int = 0) -> Path:
    """Cell images: ``labelled`` counts per label folder (nested one level deeper for every
    third cell) and ``unlabelled`` cells straight in ``root``; RGB and grey, several sizes."""
    for class_index, (name, count) in enumerate(labelled.items()):
        for index in range(count):
            deeper = "slide2" if index % 3 == 0 else ""
            image = picture(class_index, index, SIZES[index % len(SIZES)])
            save(image, root / name / deeper / f"cell{index:03d}", index)
    for index in range(unlabelled):
        image = picture(len(labelled), index, SIZES[index % len(SIZES)])
        save(image, root / f"loose{index:03d}", index)
    return root


def zip_folder(folder: Path, path: Path, top: str | None = None) -> Path:
    """``folder``'s files in a zip, under ``top/`` when given (a zip of the folder itself)."""
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                name = file.relative_to(folder).as_posix()
                archive.write(file, f"{top}/{name}" if top else name)
    return path


USER_CLASSES = {"Cat": 30, "dog house": 8, "zebra": 12}  # imbalanced, a space in a name
USER_CELLS = {"round": 24, "spiky": 18}
USER_IMAGE_SIZE = 32


def train_user_models(root: Path) -> Path:
    """Train the classifier on class folders and the autoencoder and index on cell folders
    (all at ``USER_IMAGE_SIZE``) through the CLI; returns the models folder."""
    from training.cli import main

    classes = write_class_folders(root / "classes", USER_CLASSES, nested=True)
    cells = write_cells(root / "cells", USER_CELLS, unlabelled=8)
    out = root / "models"
    size = str(USER_IMAGE_SIZE)
    for arguments in (
        ["signs", "--data", str(classes), "--quick", "--image-size", size],
        ["malaria", "--data", str(cells), "--epochs", "1", "--image-size", size],
        ["index", "--data", str(cells)],
    ):
        exit_code = main([*arguments, "--out", str(out)])
        if exit_code != 0:
            raise RuntimeError(f"training {arguments[0]} on user folders exited {exit_code}")
    return out
