"""What the exported autoencoder holds: its Keras models and the signatures the server
calls, with the tensor names of ``contract.signatures``."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from contract import signatures as names
from training.export import images_spec
from training.malaria import ood as malaria_ood
from training.malaria.autoencoder import AutoencoderParts, symmetry_averaged_codes


class AutoencoderModule(tf.Module):
    """What the server loads: ``denoise`` and ``encode`` with fixed input signatures.

    ``encode`` returns L2-normalised codes averaged over the 8 symmetries of each cell, so
    gallery and query codes are both rotation- and flip-invariant without the server knowing.
    With a ``score`` both also output ``OOD_SCORE`` (see training/malaria/ood.py);
    ``encode_codes`` is ``encode`` without it, for building the index.
    ``bottleneck`` returns the flattened code the decoder works from (the lab's compressed
    representation and its retrieval baseline); the server does not need it.
    """

    def __init__(
        self, parts: AutoencoderParts, image_size: int, score: malaria_ood.CellScore | None = None
    ) -> None:
        super().__init__()
        self.autoencoder = parts.autoencoder
        self.embedder = parts.embedder
        self.score = score
        spec = images_spec(image_size)
        # No autograph: these have no Python control flow to convert.
        self.denoise = tf.function(self._denoise, input_signature=[spec], autograph=False)
        self.encode = tf.function(self._encode, input_signature=[spec], autograph=False)
        self.codes = tf.function(self._codes, input_signature=[spec], autograph=False)
        self.encoder = parts.encoder
        self.bottleneck = tf.function(self._bottleneck, input_signature=[spec], autograph=False)

    def _denoise(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        reconstruction = self.autoencoder(images, training=False)
        if self.score is None:
            return {names.IMAGES: reconstruction}
        score = self.score.from_reconstruction(reconstruction)
        return {names.IMAGES: reconstruction, names.OOD_SCORE: score}

    def _encode(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.score is None:
            return self._codes(images)
        return {**self._codes(images), names.OOD_SCORE: self.score(images)}

    def _codes(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {names.CODES: symmetry_averaged_codes(self.embedder, images)}

    def _bottleneck(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        code = self.encoder(images, training=False)
        return {names.CODES: tf.reshape(code, [tf.shape(code)[0], -1])}


def save_autoencoder(
    parts: AutoencoderParts,
    image_size: int,
    folder: Path,
    score: malaria_ood.CellScore | None = None,
) -> None:
    module = AutoencoderModule(parts, image_size, score)
    signatures = {
        names.DEFAULT: module.denoise,
        names.DENOISE: module.denoise,
        names.ENCODE: module.encode,
        names.ENCODE_CODES: module.codes,
        names.BOTTLENECK: module.bottleneck,
    }
    tf.saved_model.save(module, str(folder), signatures=signatures)
