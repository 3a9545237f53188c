"""The ``tf.data`` input pipeline in the lab's order.

Deterministic work (uint8 -> float in [0, 1]) runs *before* ``cache`` so it happens once;
everything random (augmentation, Gaussian noise) runs *after* ``cache``/``shuffle``/
``repeat`` so every epoch sees fresh flips and fresh noise instead of a frozen copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from contract.pixels import PIXEL_MAX

MakeExample = Callable[[tf.Tensor], tuple[Any, Any]]


def to_unit_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 pixels -> float32 in [0, 1]: ``contract.pixels.scale`` inside a graph."""
    return tf.cast(image, tf.float32) / PIXEL_MAX


def add_gaussian_noise(images: tf.Tensor, sigma: float | tf.Tensor) -> tf.Tensor:
    """Zero-mean Gaussian noise of standard deviation ``sigma`` (a number, or one per image
    shaped ``[batch, 1, 1, 1]``), clipped back to [0, 1]."""
    noise = tf.random.normal(tf.shape(images), dtype=images.dtype) * sigma
    return tf.clip_by_value(images + noise, 0.0, 1.0)


def sigma_per_image(images: tf.Tensor, sigma_range: tuple[float, float]) -> tf.Tensor:
    """One noise level per image, uniform in ``sigma_range``: a denoiser trained on a
    range handles clean and lightly noised inputs too, not only one fixed sigma."""
    low, high = sigma_range
    return tf.random.uniform([tf.shape(images)[0], 1, 1, 1], low, high, dtype=images.dtype)


def random_flips_and_rotations(images: tf.Tensor) -> tf.Tensor:
    """A random one of the 8 symmetries of the square per image (cells have no orientation)."""
    images = tf.image.random_flip_left_right(images)
    images = tf.image.random_flip_up_down(images)
    transpose = tf.random.uniform([tf.shape(images)[0], 1, 1, 1]) < 0.5
    return tf.where(transpose, tf.transpose(images, [0, 2, 1, 3]), images)


def training_dataset(
    images: np.ndarray, *, batch_size: int, seed: int, make_example: MakeExample
) -> tf.data.Dataset:
    """to float -> cache -> shuffle -> repeat -> batch -> ``make_example`` -> prefetch.

    Shuffling before ``repeat`` gives every epoch a new order of all the cells; batching
    after it lets the last batch of an epoch run on into the next, so every batch is full
    and the endless dataset needs ``steps_per_epoch``. ``make_example`` turns a batch of
    clean cells into ``(inputs, targets)``; it runs after the cache, so its randomness is
    fresh every epoch. It runs on one batch at a time (``prefetch`` still overlaps it with
    training): its random ops draw from generators in call order, so calls in parallel
    would let thread timing decide which batch gets which numbers, and two runs from one
    seed would train different models.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = tf.data.Dataset.from_tensor_slices(images)
    dataset = dataset.map(to_unit_float, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.cache()
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(make_example)
    return dataset.prefetch(tf.data.AUTOTUNE)


def noise_range(noise_sigma: float | tuple[float, float]) -> tuple[float, float]:
    """One level or a ``(low, high)`` range -> a checked ``(low, high)`` range."""
    low, high = (noise_sigma, noise_sigma) if isinstance(noise_sigma, int | float) else noise_sigma
    if not 0 <= low <= high:
        raise ValueError(
            f"noise sigma must be >= 0 (a number or a low, high range), got {noise_sigma}"
        )
    return float(low), float(high)


def frozen_dataset(
    images: np.ndarray, *, batch_size: int, make_example: MakeExample
) -> tf.data.Dataset:
    """Validation batches whose randomness is drawn once and then cached (``make_example``
    runs *before* ``cache``), so validation loss is comparable between epochs and early
    stopping sees the model change, not the noise."""
    dataset = tf.data.Dataset.from_tensor_slices(images).map(to_unit_float).batch(batch_size)
    return dataset.map(make_example).cache().prefetch(tf.data.AUTOTUNE)
