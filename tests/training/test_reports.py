"""The report writers: every plot lands as a PNG where asked, and no figure stays open."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from contract.metadata import ReliabilityCurve
from training import reports

PNG = b"\x89PNG\r\n\x1a\n"


def test_save_figure_makes_the_folders_writes_a_png_and_closes_the_figure(tmp_path: Path) -> None:
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    path = tmp_path / "report" / "deeper" / "line.png"
    reports.save_figure(figure, path)
    assert path.read_bytes().startswith(PNG)
    assert not plt.fignum_exists(figure.number)


def test_every_plot_writes_its_file_and_leaves_no_figure_open(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    curve = ReliabilityCurve(confidence=[0.5, 0.9], accuracy=[0.4, 0.95], count=[3, 7])
    drawn = {
        "curves.png": lambda path: reports.plot_learning_curves(
            {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, path, "title"
        ),
        "grid.png": lambda path: reports.plot_image_grid([list(images), [images[0]]], path, ["a"]),
        "confusion.png": lambda path: reports.plot_confusion_matrix(
            np.array([[3, 1], [0, 4]]), ["cat", "dog"], path, "title"
        ),
        "scores.png": lambda path: reports.plot_score_histograms(
            {"test": rng.random(50), "noise": rng.random(20) + 1}, 1.0, path, "title"
        ),
        "reliability.png": lambda path: reports.plot_reliability_diagram(
            {"raw": curve}, path, "title"
        ),
        "codes.png": lambda path: reports.plot_code_map(
            rng.normal(size=(30, 4)), np.repeat([0, 1, -1], 10), ["a", "b"], path, "title"
        ),
    }
    for name, draw in drawn.items():
        draw(tmp_path / name)
        assert (tmp_path / name).read_bytes().startswith(PNG), name
    assert plt.get_fignums() == []
