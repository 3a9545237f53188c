"""The autoencoder report's pictures of trust: denoising at several noise levels, plain
reconstructions, a 2-D map of the retrieval codes and the OOD score histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from contract.metadata import OodSpec
from training import reports
from training.malaria.autoencoder import AutoencoderParts, symmetry_averaged_codes
from training.malaria.data import MalariaData
from training.malaria.ood import SCORE_NAME, noisy

GRID_SIGMAS = (0.05, 0.1, 0.2, 0.3)
GRID_CELLS = 6
MAP_CELLS = 2000


def write_trust_plots(
    folder: Path,
    parts: AutoencoderParts,
    cells: MalariaData,
    seed: int,
    ood_spec: OodSpec,
    ood_scores: dict[str, np.ndarray],
) -> None:
    test = cells.splits["test"]
    clean = test.images[:GRID_CELLS]

    def predict(images: np.ndarray) -> np.ndarray:
        return parts.autoencoder.predict(images.astype(np.float32) / 255.0, verbose=0)

    rows: list[list[np.ndarray]] = [list(clean)]
    titles = ["clean"]
    for sigma in GRID_SIGMAS:
        noisy_cells = noisy(clean, sigma, seed)
        rows += [list(noisy_cells), list(predict(noisy_cells))]
        titles += [f"noisy sigma {sigma}", f"denoised (sigma {sigma})"]
    reports.plot_image_grid(rows, folder / "denoising_levels.png", row_titles=titles)

    # Cells the grid above did not show; a small test split shows its first cells again.
    originals = test.images[GRID_CELLS : 3 * GRID_CELLS]
    if len(originals) == 0:
        originals = clean
    reports.plot_image_grid(
        [list(originals[:GRID_CELLS]), list(predict(originals[:GRID_CELLS]))],
        folder / "reconstructions.png",
        row_titles=["test cell", "reconstruction"],
    )

    picks = np.random.default_rng(seed).permutation(len(test.images))[:MAP_CELLS]
    codes = np.concatenate(
        [
            symmetry_averaged_codes(
                parts.embedder, tf.constant(test.images[picks[i : i + 256]] / 255.0, tf.float32)
            ).numpy()
            for i in range(0, len(picks), 256)
        ]
    )
    reports.plot_code_map(
        codes,
        test.labels[picks],
        cells.label_names,
        folder / "code_map.png",
        f"retrieval codes of {len(picks)} held-out cells, PCA",
    )

    shown = ["test", "test_noisy_sigma_0.1", *(ood_spec.negatives or {})]
    reports.plot_score_histograms(
        {name: ood_scores[name] for name in shown},
        ood_spec.threshold,
        folder / "ood_scores.png",
        f"malaria autoencoder OOD score ({SCORE_NAME}), AUROC {ood_spec.auroc:.3f}",
    )
