"""The Sequential CNN: shapes, one training step, and the exported SavedModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from training.classifier import ClassifierConfig, build_classifier
from training.custom_loop import make_steps
from training.signatures import save_classifier

SMALL = ClassifierConfig(filters=(8, 16), dense_units=16, dropout=0.0)


def test_model_is_sequential_and_outputs_one_logit_per_class() -> None:
    model = build_classifier(64, 6)
    assert isinstance(model, tf.keras.Sequential)
    assert model(np.zeros((2, 64, 64, 3), np.float32), training=False).shape == (2, 6)
    layer_types = {type(layer).__name__ for layer in model.layers}
    assert {"Conv2D", "MaxPooling2D", "Flatten", "Dropout", "Dense"} <= layer_types


def test_too_small_image_size_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        build_classifier(4, 6)


def test_one_training_step_lowers_the_loss_on_its_batch() -> None:
    tf.keras.utils.set_random_seed(1)
    model = build_classifier(16, 3, SMALL)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    images = tf.random.uniform((12, 16, 16, 3), seed=2)
    labels = tf.constant(np.arange(12) % 3, tf.int64)
    spec = (tf.TensorSpec([None, 16, 16, 3], tf.float32), tf.TensorSpec([None], tf.int64))
    train_step, _ = make_steps(model, optimizer, tf.distribute.get_strategy(), spec)
    loss_before, _, count = train_step((images, labels)).numpy()
    loss_after, _, _ = train_step((images, labels)).numpy()  # measured after one update
    assert count == 12
    assert loss_after < loss_before


def test_exported_signature_matches_the_keras_model(tmp_path: Path) -> None:
    tf.keras.utils.set_random_seed(3)
    model = build_classifier(16, 6, SMALL)
    save_classifier(model, 16, tmp_path)
    loaded = tf.saved_model.load(str(tmp_path))
    serve = loaded.signatures["serving_default"]
    images = np.random.default_rng(4).random((5, 16, 16, 3), dtype=np.float32)
    exported = serve(images=tf.constant(images))["probabilities"].numpy()
    expected = tf.nn.softmax(model(images, training=False)).numpy()
    np.testing.assert_allclose(exported, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exported.sum(axis=1), 1.0, rtol=1e-5)
    assert serve.structured_input_signature[1]["images"].shape.as_list() == [None, 16, 16, 3]
