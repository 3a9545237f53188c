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
from matplotlib.figure import Figure  # noqa: E402

from contract.metadata import ReliabilityCurve  # noqa: E402

FIGURE_DPI = 100


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=lambda v: v.tolist()))


def save_figure(figure: Figure, path: Path) -> None:
    """Lay ``figure`` out, write it to ``path`` (folders made as needed) and close it: an
    open figure keeps its memory until the process ends, and a run draws a dozen."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)


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
    save_figure(figure, path)


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
    save_figure(figure, path)


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
            axis.text(
                column, row, str(int(matrix[row, column])), ha="center", va="center", color=color
            )
    axis.set_title(title)
    save_figure(figure, path)


def plot_score_histograms(
    scores: Mapping[str, np.ndarray], threshold: float, path: Path, title: str
) -> None:
    """One step histogram per image set on shared log-spaced bins, with the flag threshold."""
    every = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores.values()])
    positive = every[every > 0]
    low = positive.min() if positive.size else 1e-6
    high = max(every.max(), threshold) * 1.05
    log_bins = low > 0 and high / low > 100
    bins = np.geomspace(low, high, 60) if log_bins else np.linspace(every.min(), high, 60)
    figure, axis = plt.subplots(figsize=(8, 4))
    for name, values in scores.items():
        clipped = np.clip(np.asarray(values, dtype=np.float64), bins[0], bins[-1])
        label = f"{name} ({len(values)})"
        weights = np.full(len(clipped), 1 / max(1, len(clipped)))  # each set sums to 1
        axis.hist(clipped, bins=list(bins), histtype="step", weights=weights, label=label)
    axis.axvline(threshold, color="black", linestyle="--", label="threshold")
    if log_bins:
        axis.set_xscale("log")
    axis.set_xlabel("OOD score (higher = less like the training data)")
    axis.set_ylabel("share of the set's images")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    save_figure(figure, path)


def plot_reliability_diagram(
    curves: Mapping[str, ReliabilityCurve], path: Path, title: str
) -> None:
    """Accuracy against mean confidence per confidence bin, one line per curve."""
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, curve in curves.items():
        axis.plot(curve.confidence, curve.accuracy, marker="o", label=name)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("mean confidence in bin")
    axis.set_ylabel("accuracy in bin")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="upper left")
    save_figure(figure, path)


def plot_code_map(
    codes: np.ndarray, labels: np.ndarray, label_names: Sequence[str], path: Path, title: str
) -> None:
    """The codes' first two principal components, one colour per label (label -1: the
    unlabelled cells)."""
    centred = codes - codes.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    points = centred @ components[:2].T
    figure, axis = plt.subplots(figsize=(5, 4.5))
    for label, name in enumerate(label_names):
        chosen = points[labels == label]
        axis.scatter(chosen[:, 0], chosen[:, 1], s=4, alpha=0.5, label=f"{name} ({len(chosen)})")
    unlabelled = points[labels < 0]
    if len(unlabelled):
        axis.scatter(
            unlabelled[:, 0],
            unlabelled[:, 1],
            s=4,
            alpha=0.5,
            color="grey",
            label=f"unlabelled ({len(unlabelled)})",
        )
    axis.set_xlabel("principal component 1")
    axis.set_ylabel("principal component 2")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, markerscale=3)
    save_figure(figure, path)
