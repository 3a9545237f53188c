"""Images/s of the malaria ``tf.data`` pipeline with and without ``cache`` and ``prefetch``.

``training.pipeline.training_dataset`` always caches and prefetches (the lab's order), so
the variants are assembled here from its own steps with one of the two left out; the
shipped function (fed the same noisy pairs) is measured too, and should match the
"cache + prefetch" variant.
Each variant is measured alone (pipeline only) and feeding the autoencoder's ``denoise``
signature, the consumer that prefetch exists to overlap with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from benchmarks.model_bench import newest_version
from contract.layout import AUTOENCODER
from training.malaria.data import load_malaria
from training.pipeline import (
    add_gaussian_noise,
    random_flips_and_rotations,
    to_unit_float,
    training_dataset,
)

BATCH_SIZE = 64
NOISE_SIGMA = 0.1
SEED = 0


def noisy_pair(clean: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A flipped/rotated batch of cells with Gaussian noise, and its clean target."""
    clean = random_flips_and_rotations(clean)
    return add_gaussian_noise(clean, NOISE_SIGMA), clean


def variant(images: np.ndarray, *, cache: bool, prefetch: bool) -> tf.data.Dataset:
    """The lab's order (map, cache, shuffle, repeat, batch, augment + noise, prefetch)
    with ``cache`` and/or ``prefetch`` optionally left out."""
    dataset = tf.data.Dataset.from_tensor_slices(images)
    dataset = dataset.map(to_unit_float, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(len(images), seed=SEED).repeat()
    dataset = dataset.batch(BATCH_SIZE, drop_remainder=True)
    dataset = dataset.map(noisy_pair, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE) if prefetch else dataset


def _images_per_s(
    dataset: tf.data.Dataset, warm_batches: int, batches: int, consume: Callable | None
) -> float:
    """Skip one warm epoch (it fills the cache), then time ``batches`` batches."""
    iterator = iter(dataset)
    for _ in range(warm_batches):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        noisy, _clean = next(iterator)
        if consume is not None:
            consume(noisy)
    return batches * BATCH_SIZE / (time.perf_counter() - start)


def pipeline_throughput(
    models: Path, data_dir: Path, fraction: float, batches: int
) -> dict[str, Any]:
    encoder_dir = newest_version(models, AUTOENCODER)
    denoise = tf.saved_model.load(str(encoder_dir)).signatures["denoise"]
    image_size = int(denoise.structured_input_signature[1]["images"].shape[1])
    decode_start = time.perf_counter()
    data = load_malaria(data_dir, image_size, fraction=fraction, splits=("train",))
    images = data.splits["train"].images
    decode_s = time.perf_counter() - decode_start
    warm_batches = max(1, len(images) // BATCH_SIZE)

    def consume(noisy: tf.Tensor) -> None:
        denoise(images=noisy)["images"].numpy()

    candidates: dict[str, Callable[[], tf.data.Dataset]] = {
        "no cache, no prefetch": lambda: variant(images, cache=False, prefetch=False),
        "prefetch only": lambda: variant(images, cache=False, prefetch=True),
        "cache only": lambda: variant(images, cache=True, prefetch=False),
        "cache + prefetch": lambda: variant(images, cache=True, prefetch=True),
        "training.pipeline.training_dataset": lambda: training_dataset(
            images, batch_size=BATCH_SIZE, seed=SEED, make_example=noisy_pair
        ),
    }
    rows = []
    for name, make in candidates.items():
        alone = _images_per_s(make(), warm_batches, batches, None)
        with_model = _images_per_s(make(), warm_batches, batches, consume)
        rows.append(
            {
                "variant": name,
                "pipeline_images_per_s": round(alone, 1),
                "with_denoise_step_images_per_s": round(with_model, 1),
            }
        )
    return {
        "cells": len(images),
        "image_size": image_size,
        "batch_size": BATCH_SIZE,
        "batches_timed": batches,
        "png_decode_s": round(decode_s, 2),
        "rows": rows,
    }
