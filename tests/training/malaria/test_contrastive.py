"""The self-supervised retrieval objective: NT-Xent, augmented views, the joint model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.malaria.autoencoder import build_autoencoder
from training.malaria.contrastive import (
    augmented_view,
    contrastive_example,
    joint_model,
    nt_xent,
    projection_head,
    random_shift,
)


def test_nt_xent_is_low_when_views_agree_and_high_when_they_do_not() -> None:
    loss = nt_xent(temperature=0.1)
    distinct = np.eye(8, dtype=np.float32)
    agreeing = tf.constant(np.stack([distinct, distinct], axis=1))
    swapped = tf.constant(np.stack([distinct, np.roll(distinct, 1, axis=0)], axis=1))
    low, high = loss(None, agreeing), loss(None, swapped)
    assert low.shape == (8,)
    assert float(tf.reduce_max(low)) < 0.01
    assert float(tf.reduce_min(high)) > 5.0


def test_nt_xent_of_identical_projections_is_chance() -> None:
    same = tf.ones([6, 2, 4])
    # Every candidate is equally similar: the positive is one of 2 * 6 - 1 candidates.
    np.testing.assert_allclose(nt_xent(0.5)(None, same), np.log(11.0), rtol=1e-5)


def test_shift_moves_a_dot_by_at_most_the_limit() -> None:
    image = np.zeros((16, 9, 9, 3), np.float32)
    image[:, 4, 4] = 1.0
    shifted = random_shift(tf.constant(image), 2.0).numpy()
    for view in shifted:
        rows, cols = np.nonzero(view[..., 0] > 0.01)
        assert np.all(np.abs(rows - 4) <= 2) and np.all(np.abs(cols - 4) <= 2)
    assert len({tuple(np.argwhere(view[..., 0] == view[..., 0].max())[0]) for view in shifted}) > 1


def test_views_stay_in_unit_range_and_differ() -> None:
    cells = tf.random.uniform([4, 16, 16, 3])
    first, second = augmented_view(cells), augmented_view(cells)
    assert first.shape == cells.shape
    assert float(tf.reduce_min(first)) >= 0 and float(tf.reduce_max(first)) <= 1
    assert float(tf.reduce_mean(tf.abs(first - second))) > 0.01


def test_joint_model_trains_both_outputs_on_shared_weights() -> None:
    keras.utils.set_random_seed(0)
    parts = build_autoencoder(16, filters=(8, 8), code_channels=8)
    model = joint_model(parts, projection_head(parts.code_dim, width=16))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={"images": "mean_squared_error", "projections": nt_xent(0.2)},
    )
    inputs, targets = contrastive_example((0.0, 0.1))(tf.random.uniform([8, 16, 16, 3]))
    outputs = model(inputs)
    assert outputs["images"].shape == (8, 16, 16, 3)
    assert outputs["projections"].shape == (8, 2, 16)
    encoder_kernel = parts.encoder.get_layer("enc_conv0").kernel
    before = encoder_kernel.numpy().copy()
    model.train_on_batch(inputs, targets)
    assert not np.allclose(encoder_kernel.numpy(), before)
    assert {id(v) for v in parts.autoencoder.weights} <= {id(v) for v in model.weights}


def test_noise_range_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        contrastive_example((0.3, 0.1))
