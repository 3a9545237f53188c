"""Self-supervised retrieval objective: SimCLR-style NT-Xent on two augmented views.

A plain autoencoder's codes describe *where* the dark and bright pixels are, which is not
what makes two cells alike (precision@10 no better than raw pixels). Asking the encoder's
pooled code to match two randomly flipped, rotated, shifted and re-lit views of one cell,
and to differ from every other cell in the batch, makes it describe *what* is in the cell.
No labels are used.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from training.malaria.autoencoder import AutoencoderParts
from training.pipeline import (
    MakeExample,
    add_gaussian_noise,
    noise_range,
    random_flips_and_rotations,
    sigma_per_image,
)


def random_shift(images: tf.Tensor, max_shift: float) -> tf.Tensor:
    """Move each image by its own random offset of up to ``max_shift`` pixels (black fill)."""
    batch = tf.shape(images)[0]
    offsets = tf.random.uniform([batch, 2], -max_shift, max_shift)
    ones, zeros = tf.ones([batch, 1]), tf.zeros([batch, 1])
    # Transform rows [a0 a1 a2 b0 b1 b2 c0 c1]: output (x, y) samples input (x + dx, y + dy).
    transforms = tf.concat(
        [ones, zeros, offsets[:, :1], zeros, ones, offsets[:, 1:], zeros, zeros], axis=1
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def augmented_view(images: tf.Tensor, max_shift: float = 4.0) -> tf.Tensor:
    """One random view per image: a symmetry of the square, a shift of up to ``max_shift``
    pixels, brightness/contrast jitter and a little noise. Cells look alike under these."""
    batch = tf.shape(images)[0]
    views = random_shift(random_flips_and_rotations(images), max_shift)
    gain = tf.random.uniform([batch, 1, 1, 1], 0.75, 1.25)
    contrast = tf.random.uniform([batch, 1, 1, 1], 0.75, 1.25)
    mean = tf.reduce_mean(views, axis=[1, 2, 3], keepdims=True)
    views = (views - mean) * contrast + mean * gain
    return add_gaussian_noise(tf.clip_by_value(views, 0.0, 1.0), 0.03)


def nt_xent(temperature: float):
    """NT-Xent loss over ``y_pred`` of shape ``[batch, 2, dim]`` (the two views' projections);
    ``y_true`` is ignored. Returns one loss per cell (both directions averaged)."""

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        del y_true  # self-supervised: the positives are the two views of the same cell
        y_pred = tf.cast(y_pred, tf.float32)  # logits / 0.1 and the mask overflow float16
        first, second = (
            tf.math.l2_normalize(y_pred[:, 0], -1),
            tf.math.l2_normalize(y_pred[:, 1], -1),
        )
        both = tf.concat([first, second], axis=0)
        batch = tf.shape(first)[0]
        logits = tf.matmul(both, both, transpose_b=True) / temperature
        logits -= tf.eye(2 * batch) * 1e9  # a view is never its own candidate
        targets = tf.concat([tf.range(batch, 2 * batch), tf.range(batch)], axis=0)
        per_view = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
        return (per_view[:batch] + per_view[batch:]) / 2.0

    return loss


def projection_head(code_dim: int, width: int = 128) -> keras.Model:
    """The small MLP SimCLR puts between the code and the loss (the code itself stays richer)."""
    codes = keras.Input((code_dim,), name="codes")
    hidden = layers.Dense(width, activation="relu", name="proj_hidden")(codes)
    return keras.Model(codes, layers.Dense(width, name="proj_out")(hidden), name="projection_head")


def contrastive_example(sigma_range: tuple[float, float]) -> MakeExample:
    """Batch of clean cells -> ``({"noisy", "view_a", "view_b"}, {"images", "projections"})``;
    the denoising input gets one noise level per cell drawn from ``sigma_range``."""
    sigma_range = noise_range(sigma_range)

    def example(clean: tf.Tensor) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        clean = random_flips_and_rotations(clean)
        inputs = {
            "noisy": add_gaussian_noise(clean, sigma_per_image(clean, sigma_range)),
            "view_a": augmented_view(clean),
            "view_b": augmented_view(clean),
        }
        return inputs, {"images": clean, "projections": tf.zeros(tf.shape(clean)[:1])}

    return example


def joint_model(parts: AutoencoderParts, head: keras.Model) -> keras.Model:
    """One model for one ``compile``/``fit``: denoise ``noisy`` and project both views.

    It shares every encoder/decoder weight with ``parts``; the projection head is only
    used for training and is not exported.
    """
    size = parts.autoencoder.input.shape[1:]
    noisy = keras.Input(size, name="noisy")
    view_a = keras.Input(size, name="view_a")
    view_b = keras.Input(size, name="view_b")
    projections = layers.Lambda(lambda pair: keras.ops.stack(pair, axis=1), name="projections")(
        [head(parts.embedder(view_a)), head(parts.embedder(view_b))]
    )
    images = layers.Identity(name="images")(parts.autoencoder(noisy))
    return keras.Model(
        {"noisy": noisy, "view_a": view_a, "view_b": view_b},
        {"images": images, "projections": projections},
        name="denoising_contrastive",
    )
