"""The SIGNS classifier as every peer serves it: newest SavedModel version, its serving
signature, JPEG bytes decoded with Pillow through ``contract.pixels`` (the function
cellsign's own decoder ends in), so the peers differ only in what surrounds the model.

Imported by the peer servers inside their venvs, which hold TensorFlow, numpy and Pillow
but not the project's dependencies; ``contract.pixels`` and ``contract.layout`` need no more.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from contract.layout import CLASSIFIER, versions
from contract.pixels import model_input
from contract.signatures import CLASSIFY, INPUT, PROBABILITIES

MAX_BATCH = 32  # the largest batch any peer's batcher forms (cellsign's default too)
MAX_WAIT_S = 0.002  # how long a batcher waits for more requests


class SignsClassifier:
    def __init__(self, models: Path) -> None:
        root = models / CLASSIFIER
        numbers = versions(root)
        if not numbers:
            raise FileNotFoundError(f"no version of {CLASSIFIER} under {models}")
        self.version = numbers[-1]
        loaded = tf.saved_model.load(str(root / str(self.version)))
        self.signature = loaded.signatures[CLASSIFY]
        self.height, self.width = self.signature.structured_input_signature[1][INPUT].shape[1:3]
        self.classes = self.signature.structured_outputs[PROBABILITIES].shape[-1]
        self.probabilities([_blank_jpeg()])  # the first call traces: not on a request

    def probabilities(self, files: Sequence[bytes]) -> np.ndarray:
        """``[len(files), classes]`` float32 for encoded image files."""
        return self.probabilities_of([Image.open(io.BytesIO(data)) for data in files])

    def probabilities_of(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The same for images Pillow has opened (not yet decoded: ``Image.open`` is lazy)."""
        batch = np.stack([model_input(image, self.height, self.width) for image in images])
        return self.signature(**{INPUT: tf.constant(batch)})[PROBABILITIES].numpy()


def answer(probabilities: np.ndarray) -> dict[str, object]:
    """The JSON answer of the peers without a protocol of their own: class and probabilities."""
    return {"class_id": int(np.argmax(probabilities)), "probabilities": probabilities.tolist()}


def _blank_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "JPEG")
    return buffer.getvalue()


def arguments(description: str, parallel: str) -> argparse.Namespace:
    """``--models``, ``--port`` and ``--parallel`` (the peer's processes or instances)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parallel", type=int, default=1, help=parallel)
    return parser.parse_args()
