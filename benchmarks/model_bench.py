"""The in-process ceiling of inference: the classifier's SavedModel signature called directly.

This is what the server could reach with no HTTP, no decoding and perfect batching; the
several-images-per-request numbers are compared against it.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from benchmarks.payloads import signs_images
from contract.layout import CLASSIFIER, versions
from contract.pixels import model_input
from contract.signatures import CLASSIFY, INPUT, PROBABILITIES


def newest_version(models: Path, name: str) -> Path:
    numbers = versions(models / name)
    if not numbers:
        raise FileNotFoundError(f"no version of {name} under {models}")
    return models / name / str(numbers[-1])


def signature_throughput(
    models: Path, data_dir: Path, batch_sizes: tuple[int, ...], duration_s: float
) -> list[dict[str, Any]]:
    """Images/s of ``serving_default`` on real SIGNS images, per batch size."""
    signature = tf.saved_model.load(str(newest_version(models, CLASSIFIER))).signatures[CLASSIFY]
    images = signs_images(data_dir, max(batch_sizes))
    height, width = signature.structured_input_signature[1][INPUT].shape[1:3]
    pixels = np.stack([model_input(Image.open(io.BytesIO(data)), height, width) for data in images])
    rows = []
    for batch_size in batch_sizes:
        batch = tf.constant(pixels[:batch_size])
        for _ in range(3):  # the first calls trace and allocate
            signature(images=batch)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration_s:
            signature(images=batch)[PROBABILITIES].numpy()
            calls += 1
        elapsed = time.perf_counter() - start
        rows.append(
            {
                "batch_size": batch_size,
                "calls": calls,
                "ms_per_call": round(elapsed / calls * 1000, 3),
                "images_per_s": round(calls * batch_size / elapsed, 1),
                "device": _device_of(),
            }
        )
    return rows


def _device_of() -> str:
    return "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU"
