"""Small writers for the report folder every training run leaves beside its model."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=lambda v: v.tolist()))


def plot_learning_curves(history: Mapping[str, Sequence[float]], path: Path, title: str) -> None:
    """One panel per metric family (``loss``, ``accuracy``...), train and validation together."""
    families = sorted({key.removeprefix("val_") for key in history})
    figure, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 3.5), squeeze=False)
    for axis, family in zip(axes[0], families, strict=True):
        for key in (family, f"val_{family}"):
            if key in history:
                axis.plot(range(1, len(history[key]) + 1), history[key], label=key)
        axis.set_xlabel("epoch")
        axis.set_title(family)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: Path,
    row_titles: Sequence[str],
    col_titles: Sequence[str] = (),
) -> None:
    """Images in ``[0, 1]`` or uint8, laid out one list per row."""
    n_rows, n_cols = len(rows), max(len(row) for row in rows)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(1.4 * n_cols, 1.5 * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            axis = axes[r][c]
            axis.axis("off")
            if c < len(row):
                axis.imshow(np.clip(row[c], 0, 255 if row[c].dtype == np.uint8 else 1))
            if c == 0 and r < len(row_titles):
                axis.set_title(row_titles[r], fontsize=7, loc="left")
            elif r == 0 and c < len(col_titles):
                axis.set_title(col_titles[c], fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> None:
    """Counts with true classes as rows and predicted classes as columns."""
    size = max(3.0, 0.6 * len(class_names) + 1.5)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names)
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for row in ticks:
        for column in ticks:
            color = "white" if matrix[row, column] > threshold else "black"
            axis.text(column, row, int(matrix[row, column]), ha="center", va="center", color=color)
    axis.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
