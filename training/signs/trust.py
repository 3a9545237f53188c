"""Can the classifier's answer be trusted? Its temperature and its out-of-distribution score.

Both are fitted after training and baked into the exported signature: ``probabilities`` is
``softmax(logits / T)`` with ``T`` fitted on validation data (training/signs/calibration.py),
and ``OOD_SCORE`` is the Mahalanobis distance of the last convolution stage's feature maps,
averaged over positions, to the nearest gesture's training mean (shared covariance). The
report lists the candidates it was measured against (one minus the top probability, the
energy ``-logsumexp(logits)``, the same distance on the penultimate dense layer); see
docs/trust.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from contract.metadata import CalibrationSpec, OodFigures, OodSpec
from contract.signatures import CLASSIFIER_SCORED
from training import ood, reports
from training.errors import DataError
from training.signs import calibration
from training.signs.data import SignsSplits

log = logging.getLogger(__name__)

SCORE_NAME = "conv_feature_mahalanobis"
_BATCH = 128
MALARIA_FRACTION = 0.15  # of the malaria test split: a few hundred cells as negatives
SIGNS_DESCRIPTION = "SIGNS hand-gesture photos (0-5 fingers)"


def _head_start(model: tf.keras.Sequential) -> int:
    """Index of the Flatten layer: before it the convolution stages, from it the dense head."""
    for index, layer in enumerate(model.layers):
        if isinstance(layer, tf.keras.layers.Flatten):
            return index
    raise ValueError(f"{model.name} has no Flatten layer between its convolutions and head")


def _apply(layers: list[tf.keras.layers.Layer], values: tf.Tensor) -> tf.Tensor:
    for layer in layers:
        values = layer(values, training=False)
    return values


def feature_maps(model: tf.keras.Sequential, images: tf.Tensor) -> tf.Tensor:
    """The last convolution stage's output, ``(batch, h, w, channels)``."""
    return _apply(model.layers[: _head_start(model)], images)


def features(maps: tf.Tensor) -> tf.Tensor:
    """Feature maps averaged over positions: what the OOD score measures."""
    return tf.reduce_mean(maps, axis=[1, 2])


def logits_from(model: tf.keras.Sequential, maps: tf.Tensor) -> tf.Tensor:
    return _apply(model.layers[_head_start(model) :], maps)


def _penultimate(model: tf.keras.Sequential, maps: tf.Tensor) -> tf.Tensor:
    return _apply(model.layers[_head_start(model) : -1], maps)


@dataclass(frozen=True)
class ClassifierTrust:
    """What the export bakes in: the temperature and the fitted feature distribution."""

    temperature: float
    fit: ood.Mahalanobis

    def score(self, maps: tf.Tensor) -> tf.Tensor:
        return ood.mahalanobis_scores(features(maps), self.fit)


def _activations(model: tf.keras.Sequential, images: np.ndarray) -> tuple[np.ndarray, ...]:
    """(pooled conv features, penultimate features, logits) for uint8 images."""

    @tf.function
    def run(batch: tf.Tensor) -> tuple[tf.Tensor, ...]:
        maps = feature_maps(model, batch)
        return features(maps), _penultimate(model, maps), logits_from(model, maps)

    triples = [
        run(tf.constant(images[i : i + _BATCH].astype(np.float32) / 255.0))
        for i in range(0, len(images), _BATCH)
    ]
    return tuple(np.concatenate([triple[k].numpy() for triple in triples]) for k in range(3))


def cell_images(data: Path | None, image_size: int, seed: int) -> dict[str, np.ndarray]:
    """NIH malaria cells as negatives when the data root holds them (never downloaded for
    this, never taken from a user's own folders: those may be the classes themselves)."""
    if data is None:
        return {}
    from training.malaria.data import load_malaria

    try:
        cells = load_malaria(
            Path(data),
            image_size,
            seed=seed,
            fraction=MALARIA_FRACTION,
            splits=("test",),
            nih_only=True,
        )
    except DataError as error:
        log.info("no malaria cells as OOD negatives: %s", error)
        return {}
    return {"malaria_cells": cells.splits["test"].images}


def calibrate(
    model: tf.keras.Sequential,
    splits: SignsSplits,
    data: Path | None,
    seed: int,
    in_distribution: str = SIGNS_DESCRIPTION,
) -> tuple[ClassifierTrust, CalibrationSpec, OodSpec, dict[str, np.ndarray]]:
    """Fit the temperature on validation, the feature distribution on training images, the
    OOD threshold on validation; measure on test and negatives.

    Returns the trust to export, the ``calibration`` and ``ood`` metadata blocks, and the
    chosen score on every image set (for the report's histograms).
    """
    size = splits.train.images.shape[1]
    negatives = ood.negative_images(size, seed, cell_images(data, size, seed))
    sets = {
        "validation": splits.validation.images,
        "test": splits.test.images,
        **negatives,
    }
    train_conv, train_penultimate, _ = _activations(model, splits.train.images)
    fit = ood.fit_mahalanobis(train_conv, splits.train.labels)
    penultimate_fit = ood.fit_mahalanobis(train_penultimate, splits.train.labels)
    outputs = {name: _activations(model, images) for name, images in sets.items()}

    validation_logits = outputs["validation"][2]
    temperature = calibration.fit_temperature(validation_logits, splits.validation.labels)
    test_logits = outputs["test"][2]
    before = calibration.reliability(calibration.softmax(test_logits), splits.test.labels)
    after = calibration.reliability(
        calibration.softmax(test_logits, temperature), splits.test.labels
    )
    calibration_spec = CalibrationSpec(
        method="temperature scaling: validation NLL + N(0, sigma) prior on log T",
        log_t_prior_sigma=calibration.LOG_T_PRIOR_SIGMA,
        temperature=temperature,
        ece_bins=calibration.ECE_BINS,
        test_ece_before=before.ece,
        test_ece_after=after.ece,
        validation_nll_before=calibration.negative_log_likelihood(
            validation_logits, splits.validation.labels, 1.0
        ),
        validation_nll_after=calibration.negative_log_likelihood(
            validation_logits, splits.validation.labels, temperature
        ),
        test_reliability_before=before.curve,
        test_reliability_after=after.curve,
    )

    trust = ClassifierTrust(temperature, fit)
    candidates = {
        "max_probability": {
            name: 1.0 - calibration.softmax(logits, temperature).max(axis=1)
            for name, (_, _, logits) in outputs.items()
        },
        "energy": {name: ood.energy_scores(logits) for name, (_, _, logits) in outputs.items()},
        "penultimate_mahalanobis": {
            name: ood.mahalanobis_scores(hidden, penultimate_fit).numpy()
            for name, (_, hidden, _) in outputs.items()
        },
        SCORE_NAME: {
            name: ood.mahalanobis_scores(conv, fit).numpy()
            for name, (conv, _, _) in outputs.items()
        },
    }
    summary = {name: summarise(scores, list(negatives)) for name, scores in candidates.items()}
    ood_spec = ood.check_spec(SCORE_NAME, CLASSIFIER_SCORED, in_distribution, summary)
    log.info(
        "temperature %.3f: test ECE %.4f -> %.4f; OOD %s AUROC %.4f, test false-flag rate %.3f",
        temperature,
        before.ece,
        after.ece,
        SCORE_NAME,
        ood_spec.auroc,
        ood_spec.test_false_flag_rate,
    )
    return trust, calibration_spec, ood_spec, candidates[SCORE_NAME]


def summarise(scores: dict[str, np.ndarray], negative_names: list[str]) -> OodFigures:
    """Threshold from validation; AUROC and flag rates on test and the negatives."""
    threshold = ood.threshold_for(scores["validation"])
    return ood.evaluate(scores["test"], {n: scores[n] for n in negative_names}, threshold)


def write_plots(
    folder: Path,
    calibration_spec: CalibrationSpec,
    ood_spec: OodSpec,
    scores: dict[str, np.ndarray],
) -> None:
    before, after = calibration_spec.test_ece_before, calibration_spec.test_ece_after
    reports.plot_reliability_diagram(
        {
            f"raw (ECE {before:.3f})": calibration_spec.test_reliability_before,
            f"T = {calibration_spec.temperature:.2f} (ECE {after:.3f})": (
                calibration_spec.test_reliability_after
            ),
        },
        folder / "reliability_diagram.png",
        f"SIGNS held-out test, {calibration_spec.ece_bins} bins",
    )
    reports.plot_score_histograms(
        {name: scores[name] for name in ("test", *(ood_spec.negatives or {}))},
        ood_spec.threshold,
        folder / "ood_scores.png",
        f"SIGNS classifier OOD score ({SCORE_NAME}), AUROC {ood_spec.auroc:.3f}",
    )
