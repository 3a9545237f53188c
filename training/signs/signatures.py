"""What the exported classifier holds: its Keras model and the signature the server calls,
with the tensor names of ``contract.signatures``."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from contract import signatures as names
from training.export import images_spec
from training.signs import trust as signs_trust


class ServingModule(tf.Module):
    """The classifier: one fixed-shape signature returning class probabilities.

    With ``trust`` the probabilities are temperature-scaled and an ``OOD_SCORE`` output is
    added (training/signs/trust.py); without it the signature is the plain softmax.
    """

    def __init__(
        self,
        model: tf.keras.Model,
        image_size: int,
        trust: signs_trust.ClassifierTrust | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.trust = trust
        self.serve = tf.function(self._probabilities, input_signature=[images_spec(image_size)])

    def _probabilities(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.trust is None:
            return {names.PROBABILITIES: tf.nn.softmax(self.model(images, training=False))}
        maps = signs_trust.feature_maps(self.model, images)
        logits = signs_trust.logits_from(self.model, maps)
        return {
            names.PROBABILITIES: tf.nn.softmax(logits / self.trust.temperature),
            names.OOD_SCORE: self.trust.score(maps),
        }


def save_classifier(
    model: tf.keras.Model,
    image_size: int,
    folder: Path,
    trust: signs_trust.ClassifierTrust | None = None,
) -> None:
    module = ServingModule(model, image_size, trust)
    tf.saved_model.save(module, str(folder), signatures={names.CLASSIFY: module.serve})
