"""The trust parts baked into the SavedModels: temperature, and the OOD score outputs."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training import ood
from training.autoencoder import build_autoencoder
from training.classifier import ClassifierConfig, build_classifier
from training.malaria_ood import CellScore, candidate_scores, cell_features
from training.signatures import save_autoencoder, save_classifier
from training.signs_trust import ClassifierTrust, feature_maps, features, logits_from

SMALL = ClassifierConfig(filters=(8, 16), dense_units=16, dropout=0.0)


def test_classifier_export_divides_logits_by_t_and_scores_the_features(tmp_path: Path) -> None:
    tf.keras.utils.set_random_seed(5)
    model = build_classifier(16, 6, SMALL)
    rng = np.random.default_rng(6)
    train = rng.random((60, 16, 16, 3), dtype=np.float32)
    fit = ood.fit_mahalanobis(features(feature_maps(model, train)).numpy(), np.arange(60) % 6)
    trust = ClassifierTrust(temperature=0.5, fit=fit)
    save_classifier(model, 16, tmp_path, trust)
    serve = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    images = rng.random((4, 16, 16, 3), dtype=np.float32)
    exported = serve(images=tf.constant(images))
    maps = feature_maps(model, images)
    logits = logits_from(model, maps)
    np.testing.assert_allclose(logits, model(images, training=False), atol=1e-5)
    np.testing.assert_allclose(exported["probabilities"], tf.nn.softmax(logits / 0.5), atol=1e-5)
    expected = ood.mahalanobis_scores(features(maps), fit)
    np.testing.assert_allclose(exported["ood_score"], expected, rtol=1e-4)


def test_autoencoder_export_scores_in_both_signatures(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    parts = build_autoencoder(16, filters=(8, 8), code_channels=4)
    rng = np.random.default_rng(1)
    train = (rng.random((40, 16, 16, 3)) * 255).astype(np.uint8)
    measure = cell_features(parts)
    score, candidates = candidate_scores(parts, measure(train), np.arange(40) % 2)
    assert isinstance(score, CellScore)
    assert set(candidates) == {
        "reconstruction_error",
        "input_code_mahalanobis",
        "reconstruction_code_mahalanobis",
    }
    save_autoencoder(parts, 16, tmp_path / "model", score)
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    uint8_cells = (rng.random((3, 16, 16, 3)) * 255).astype(np.uint8)
    cells = tf.constant(uint8_cells.astype(np.float32) / 255.0)
    expected = score(cells).numpy()
    for signature in ("denoise", "encode", "serving_default"):
        outputs = loaded.signatures[signature](images=cells)
        np.testing.assert_allclose(outputs["ood_score"], expected, rtol=1e-4)
    features = measure(uint8_cells)
    np.testing.assert_allclose(candidates["reconstruction_code_mahalanobis"](features), expected)
    reconstruction = parts.autoencoder(cells, training=False)
    np.testing.assert_allclose(
        candidates["reconstruction_error"](features),
        tf.reduce_mean((reconstruction - cells) ** 2, [1, 2, 3]),
        rtol=1e-5,
    )
