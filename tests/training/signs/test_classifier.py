"""The Sequential CNN: shapes, one training step, dropout and batch norm in training vs
inference, and the exported SavedModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from training.signs.classifier import ClassifierConfig, build_classifier
from training.signs.custom_loop import make_steps
from training.signs.signatures import save_classifier

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


def _batch_norms(model: tf.keras.Model) -> list[tf.keras.layers.BatchNormalization]:
    norm = tf.keras.layers.BatchNormalization
    return [layer for layer in model.layers if isinstance(layer, norm)]


def test_dropout_is_random_when_training_and_off_when_not() -> None:
    tf.keras.utils.set_random_seed(5)
    model = build_classifier(16, 3, ClassifierConfig(filters=(8, 16), dense_units=16, dropout=0.5))
    images = tf.random.uniform((4, 16, 16, 3), seed=6)
    inferred = [model(images, training=False).numpy() for _ in range(2)]
    np.testing.assert_array_equal(inferred[0], inferred[1])
    trained = [model(images, training=True).numpy() for _ in range(2)]
    assert not np.allclose(trained[0], trained[1])


def test_batch_norm_uses_batch_statistics_when_training_and_moving_averages_when_not() -> None:
    """With ``training=True`` an image's output depends on the other images in its batch, and
    the moving averages move; with ``training=False`` neither happens. (No dropout here.)"""
    tf.keras.utils.set_random_seed(7)
    model = build_classifier(16, 3, SMALL)
    image = tf.random.uniform((1, 16, 16, 3), seed=8)
    dark, bright = tf.zeros((3, 16, 16, 3)), tf.ones((3, 16, 16, 3))
    averages = [layer.moving_mean.numpy().copy() for layer in _batch_norms(model)]

    def first_row(companions: tf.Tensor, training: bool) -> np.ndarray:
        return model(tf.concat([image, companions], axis=0), training=training)[0].numpy()

    np.testing.assert_allclose(first_row(dark, False), first_row(bright, False), atol=1e-6)
    for layer, before in zip(_batch_norms(model), averages, strict=True):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), before)
    assert not np.allclose(first_row(dark, True), first_row(bright, True), atol=1e-3)
    assert not np.allclose(_batch_norms(model)[0].moving_mean.numpy(), averages[0])
