"""OOD scoring math: AUROC, thresholds, the Mahalanobis fit, and the never-seen negatives."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training import ood


def brute_force_auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    pairs = list(itertools.product(inside, outside))
    return sum(1.0 if o > i else 0.5 if o == i else 0.0 for i, o in pairs) / len(pairs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_counting_pairs_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    inside = rng.integers(0, 6, 23).astype(float)  # few distinct values: many ties
    outside = rng.integers(2, 9, 17).astype(float)
    assert ood.auroc(inside, outside) == pytest.approx(brute_force_auroc(inside, outside))


def test_auroc_is_one_when_every_negative_scores_higher_and_zero_when_lower() -> None:
    assert ood.auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 1.0
    assert ood.auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 0.0


def test_threshold_flags_the_target_share_of_validation_scores() -> None:
    scores = np.arange(1000, dtype=float)
    threshold = ood.threshold_for(scores, target=0.05)
    assert (scores > threshold).mean() == pytest.approx(0.05, abs=0.002)


def test_mahalanobis_scores_are_the_squared_distance_to_the_nearest_class_mean() -> None:
    rng = np.random.default_rng(3)
    features = np.concatenate([rng.normal(0, 1, (200, 4)), rng.normal(5, 2, (200, 4))])
    labels = np.repeat([0, 1], 200)
    fit = ood.fit_mahalanobis(features, labels)
    queries = rng.normal(2, 3, (7, 4)).astype(np.float32)
    expected = np.min(
        [np.einsum("nd,de,ne->n", queries - m, fit.precision, queries - m) for m in fit.means],
        axis=0,
    )
    np.testing.assert_allclose(ood.mahalanobis_scores(queries, fit).numpy(), expected, rtol=1e-4)
    # points far from both classes score far above the training points
    train_scores = ood.mahalanobis_scores(features, fit).numpy()
    far = ood.mahalanobis_scores(np.full((1, 4), 40.0), fit).numpy()
    assert far[0] > train_scores.max()


def test_energy_is_lower_for_confident_logits() -> None:
    scores = ood.energy_scores(np.array([[10.0, 0.0, 0.0], [0.1, 0.0, 0.0]]))
    assert scores[0] < scores[1]


def test_negatives_cover_noise_flat_colours_photos_and_other_data_offline() -> None:
    other = {"cells": np.zeros((1000, 24, 24, 3), np.uint8)}
    sets = ood.negative_images(24, seed=0, other=other)
    assert set(sets) == {"noise", "flat_colour", "photos", "cells"}
    for images in sets.values():
        assert images.dtype == np.uint8 and images.shape[1:] == (24, 24, 3)
    assert len(sets["photos"]) == len(ood.SKIMAGE_PHOTOS) * ood.CROPS_PER_PHOTO
    assert len(sets["cells"]) == ood.OTHER_DATA_IMAGES
    flat = sets["flat_colour"].reshape(len(sets["flat_colour"]), -1, 3)
    assert (flat == flat[:, :1]).all()  # one colour per image
    assert sets["photos"].std() > 20  # real pictures, not blanks


def test_the_check_spec_holds_the_chosen_score_for_the_server_and_every_candidate() -> None:
    rng = np.random.default_rng(4)
    validation, test = rng.normal(0, 1, 500), rng.normal(0, 1, 200)
    negatives = {"noise": rng.normal(6, 1, 50), "photos": rng.normal(0.5, 1, 50)}
    noisy_test = {"0.1": rng.normal(1, 1, 200)}
    chosen = ood.evaluate(test, negatives, ood.threshold_for(validation), noisy_test)
    rival = ood.evaluate(-test, {k: -v for k, v in negatives.items()}, 0.0)
    assert chosen.negatives is not None and chosen.negatives["noise"].flagged_rate == 1.0
    assert chosen.test_images == 200 and chosen.negative_images == 100
    assert chosen.noisy_test_false_flag_rate is not None
    assert chosen.noisy_test_false_flag_rate["0.1"] > chosen.test_false_flag_rate

    spec = ood.check_spec("chosen", ["serving_default"], "bells", {"chosen": chosen, "r": rival})
    assert (spec.output, spec.signatures, spec.in_distribution) == (
        "ood_score",
        ["serving_default"],
        "bells",
    )
    assert spec.threshold == chosen.threshold and spec.auroc == chosen.auroc
    assert spec.higher_is_ood and spec.validation_false_flag_target == ood.FALSE_FLAG_TARGET
    assert spec.candidates is not None and set(spec.candidates) == {"chosen", "r"}
    assert spec.candidates["r"].negatives is None  # candidates keep their headline only
    assert spec.candidates["r"].auroc == rival.auroc
