"""Does an input look like a blood-smear cell? The autoencoder's out-of-distribution score.

The score is the Mahalanobis distance of the *reconstruction's* retrieval code to the
training cells' codes (one mean per label, shared covariance). Reconstructing first makes
the score robust to the noise ``/denoise`` exists to remove: a noisy cell reconstructs to a
clean cell, while a hand, a photo or a flat colour reconstructs to something that is no
cell. Measured against two cheaper candidates (the reconstruction error and the distance of
the input's own code), which the report lists beside it; see docs/trust.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from contract.metadata import OodFigures, OodSpec
from contract.signatures import AUTOENCODER_SCORED
from training import ood
from training.errors import DataError
from training.malaria.autoencoder import AutoencoderParts
from training.malaria.data import NIH_DESCRIPTION, MalariaData

log = logging.getLogger(__name__)

SCORE_NAME = "reconstruction_code_mahalanobis"
NOISY_SIGMAS = (0.05, 0.1, 0.2)
_BATCH = 256
Features = dict[str, np.ndarray]


class CellScore:
    """The graph that turns images in ``[0, 1]`` into OOD scores; the export reuses it."""

    def __init__(self, parts: AutoencoderParts, fit: ood.Mahalanobis) -> None:
        self.parts = parts
        self.fit = fit

    def from_reconstruction(self, reconstruction: tf.Tensor) -> tf.Tensor:
        return ood.mahalanobis_scores(_codes(self.parts, reconstruction), self.fit)

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        return self.from_reconstruction(self.parts.autoencoder(images, training=False))


def cell_features(parts: AutoencoderParts) -> Callable[[np.ndarray], Features]:
    """uint8 images -> what every candidate score needs: the input's code, the
    reconstruction's code and the reconstruction error, from one autoencoder and two
    embedder passes per batch, in one graph traced once for all image sets."""

    @tf.function(reduce_retracing=True)
    def batch_features(batch: tf.Tensor) -> dict[str, tf.Tensor]:
        reconstruction = parts.autoencoder(batch, training=False)
        return {
            "input_codes": _codes(parts, batch),
            "reconstruction_codes": _codes(parts, reconstruction),
            "reconstruction_error": tf.reduce_mean((reconstruction - batch) ** 2, [1, 2, 3]),
        }

    def features(images: np.ndarray) -> Features:
        batches = [
            batch_features(tf.constant(images[i : i + _BATCH].astype(np.float32) / 255.0))
            for i in range(0, len(images), _BATCH)
        ]
        return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}

    return features


def _codes(parts: AutoencoderParts, images: tf.Tensor) -> tf.Tensor:
    return tf.math.l2_normalize(parts.embedder(images, training=False), -1)


def hand_images(data: Path | None, image_size: int, seed: int) -> dict[str, np.ndarray]:
    """SIGNS hands as negatives when the data root holds them (never downloaded for this)."""
    if data is None:
        return {}
    from training.signs.data import find_course_signs, load_signs

    source = find_course_signs(Path(data))
    if source is None:  # a user's own cell folders are no hands
        return {}
    try:
        return {"signs_hands": load_signs(source, image_size, seed).train.images}
    except DataError as error:
        log.info("no SIGNS hands as OOD negatives: %s", error)
        return {}


def noisy(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = images.astype(np.float32) + rng.normal(0, sigma * 255, images.shape)
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def calibrate(
    parts: AutoencoderParts, cells: MalariaData, data: Path | None, seed: int
) -> tuple[CellScore, OodSpec, dict[str, np.ndarray]]:
    """Fit on training cells, threshold on validation cells, measure on test and negatives.

    Returns the chosen score's graph, the ``ood`` metadata block and the chosen score on
    every image set (for the report's histograms).
    """
    splits = cells.splits
    size = cells.image_size
    negatives = ood.negative_images(size, seed, hand_images(data, size, seed))
    sets = {
        "validation": splits["validation"].images,
        "test": splits["test"].images,
        **{f"test_noisy_sigma_{s}": noisy(splits["test"].images, s, seed) for s in NOISY_SIGMAS},
        **negatives,
    }
    train, measure = splits["train"], cell_features(parts)
    chosen, functions = candidate_scores(parts, measure(train.images), train.labels)
    features = {set_name: measure(images) for set_name, images in sets.items()}
    candidates = {
        name: {set_name: function(features[set_name]) for set_name in sets}
        for name, function in functions.items()
    }
    summary = {name: summarise(scores, list(negatives)) for name, scores in candidates.items()}
    spec = ood.check_spec(
        SCORE_NAME,
        AUTOENCODER_SCORED,
        NIH_DESCRIPTION if cells.nih else f"cell images like those in {cells.source}",
        summary,
    )
    log.info(
        "OOD %s: AUROC %.4f, test false-flag rate %.3f",
        SCORE_NAME,
        spec.auroc,
        spec.test_false_flag_rate,
    )
    return chosen, spec, candidates[SCORE_NAME]


def candidate_scores(
    parts: AutoencoderParts, train: Features, train_labels: np.ndarray
) -> tuple[CellScore, dict[str, Callable[[Features], np.ndarray]]]:
    """The chosen score's graph, and every candidate (the chosen one among them) as
    ``cell_features`` -> scores, fitted on the training cells' features."""
    input_fit = ood.fit_mahalanobis(train["input_codes"], train_labels)
    chosen = CellScore(parts, ood.fit_mahalanobis(train["reconstruction_codes"], train_labels))
    return chosen, {
        "reconstruction_error": lambda f: f["reconstruction_error"],
        "input_code_mahalanobis": lambda f: _scores(f["input_codes"], input_fit),
        SCORE_NAME: lambda f: _scores(f["reconstruction_codes"], chosen.fit),
    }


def _scores(codes: np.ndarray, fit: ood.Mahalanobis) -> np.ndarray:
    return np.concatenate(
        [
            ood.mahalanobis_scores(codes[i : i + _BATCH], fit).numpy()
            for i in range(0, len(codes), _BATCH)
        ]
    )


def summarise(scores: dict[str, np.ndarray], negative_names: list[str]) -> OodFigures:
    """Threshold from validation; AUROC and flag rates on test, noisy test and negatives."""
    threshold = ood.threshold_for(scores["validation"])
    noisy_test = {str(sigma): scores[f"test_noisy_sigma_{sigma}"] for sigma in NOISY_SIGMAS}
    negatives = {n: scores[n] for n in negative_names}
    return ood.evaluate(scores["test"], negatives, threshold, noisy_test)
