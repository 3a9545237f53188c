"""Temperature scaling and the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from training.signs import calibration


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (20_000, 5))
    true_temperature = 2.5
    probabilities = calibration.softmax(logits, true_temperature)
    labels = np.array([rng.choice(5, p=p) for p in probabilities])
    fitted = calibration.fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert calibration.negative_log_likelihood(
        logits, labels, fitted
    ) < calibration.negative_log_likelihood(logits, labels, 1.0)


def test_the_prior_keeps_t_finite_when_validation_has_no_errors() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 160)
    logits = rng.normal(0, 1, (160, 6))
    logits[np.arange(160), labels] += 5.0  # every image right: plain NLL wants T -> 0
    plain = calibration.fit_temperature(logits, labels, prior_sigma=1e6)
    assert plain < 0.06  # ran to the bottom of the search range
    assert 0.2 < calibration.fit_temperature(logits, labels) < 1.0


def test_ece_is_the_gap_between_confidence_and_accuracy() -> None:
    probabilities = np.tile([0.8, 0.2], (10, 1))
    right = np.zeros(10, int)  # every top-1 is right: accuracy 1.0 at confidence 0.8
    assert calibration.reliability(probabilities, right).ece == pytest.approx(0.2)
    eight_of_ten = np.array([0] * 8 + [1] * 2)
    result = calibration.reliability(probabilities, eight_of_ten)
    assert result.ece == pytest.approx(0.0)
    assert result.curve.count == [10]  # empty bins are left out of the curve
    assert result.curve.confidence == [pytest.approx(0.8)]
    assert result.curve.accuracy == [pytest.approx(0.8)]
    assert result.bins == calibration.ECE_BINS
