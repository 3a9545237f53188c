"""The autoencoder's out-of-distribution score: its candidates, and the score baked into
every scored signature of the export."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from contract.signatures import OOD_SCORE
from training.malaria.autoencoder import build_autoencoder
from training.malaria.ood import SCORE_NAME, CellScore, candidate_scores, cell_features
from training.malaria.signatures import save_autoencoder


def test_autoencoder_export_scores_in_both_signatures(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    parts = build_autoencoder(16, filters=(8, 8), code_channels=4)
    rng = np.random.default_rng(1)
    train = (rng.random((40, 16, 16, 3)) * 255).astype(np.uint8)
    measure = cell_features(parts)
    score, candidates = candidate_scores(parts, measure(train), np.arange(40) % 2)
    assert isinstance(score, CellScore)
    assert set(candidates) == {"reconstruction_error", "input_code_mahalanobis", SCORE_NAME}
    save_autoencoder(parts, 16, tmp_path / "model", score)
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    uint8_cells = (rng.random((3, 16, 16, 3)) * 255).astype(np.uint8)
    cells = tf.constant(uint8_cells.astype(np.float32) / 255.0)
    expected = score(cells).numpy()
    for signature in ("denoise", "encode", "serving_default"):
        outputs = loaded.signatures[signature](images=cells)
        np.testing.assert_allclose(outputs[OOD_SCORE], expected, rtol=1e-4)
    features = measure(uint8_cells)
    np.testing.assert_allclose(candidates[SCORE_NAME](features), expected)
    reconstruction = parts.autoencoder(cells, training=False)
    np.testing.assert_allclose(
        candidates["reconstruction_error"](features),
        tf.reduce_mean((reconstruction - cells) ** 2, [1, 2, 3]),
        rtol=1e-5,
    )
