"""The trust parts baked into the exported classifier: its temperature and its OOD score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from contract.signatures import CLASSIFY, OOD_SCORE, PROBABILITIES
from training import ood
from training.signs.classifier import ClassifierConfig, build_classifier
from training.signs.signatures import save_classifier
from training.signs.trust import ClassifierTrust, feature_maps, features, logits_from

SMALL = ClassifierConfig(filters=(8, 16), dense_units=16, dropout=0.0)


def test_classifier_export_divides_logits_by_t_and_scores_the_features(tmp_path: Path) -> None:
    tf.keras.utils.set_random_seed(5)
    model = build_classifier(16, 6, SMALL)
    rng = np.random.default_rng(6)
    train = rng.random((60, 16, 16, 3), dtype=np.float32)
    fit = ood.fit_mahalanobis(features(feature_maps(model, train)).numpy(), np.arange(60) % 6)
    trust = ClassifierTrust(temperature=0.5, fit=fit)
    save_classifier(model, 16, tmp_path, trust)
    serve = tf.saved_model.load(str(tmp_path)).signatures[CLASSIFY]
    images = rng.random((4, 16, 16, 3), dtype=np.float32)
    exported = serve(images=tf.constant(images))
    maps = feature_maps(model, images)
    logits = logits_from(model, maps)
    np.testing.assert_allclose(logits, model(images, training=False), atol=1e-5)
    np.testing.assert_allclose(exported[PROBABILITIES], tf.nn.softmax(logits / 0.5), atol=1e-5)
    expected = ood.mahalanobis_scores(features(maps), fit)
    np.testing.assert_allclose(exported[OOD_SCORE], expected, rtol=1e-4)
