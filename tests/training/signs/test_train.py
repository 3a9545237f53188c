"""The classifier job's pieces that decide the report: class weights and per-class scores."""

from __future__ import annotations

import numpy as np
import pytest

from training.signs.custom_loop import LoopResult
from training.signs.train import class_weights, evaluation_metrics, per_class_scores


def test_balanced_classes_get_no_weights() -> None:
    assert class_weights(np.repeat(np.arange(6), 180), 6) is None  # SIGNS trains as before


def test_rare_classes_weigh_more_and_the_mean_weight_per_example_is_one() -> None:
    labels = np.array([0] * 30 + [1] * 6 + [2] * 12)
    weights = class_weights(labels, 3)
    assert weights is not None
    assert weights[1] > weights[2] > weights[0]
    assert weights[labels].mean() == pytest.approx(1.0)


def test_per_class_precision_recall_and_support_follow_the_confusion_matrix() -> None:
    confusion = np.array([[8, 2], [1, 1]])  # rows: true class, columns: predicted
    scores = per_class_scores(confusion, ["common", "rare"])
    assert scores["common"] == {"precision": 8 / 9, "recall": 0.8, "support": 10}
    assert scores["rare"] == {"precision": 1 / 3, "recall": 0.5, "support": 2}


def test_evaluation_metrics_name_the_classes_and_balance_the_accuracy() -> None:
    labels = np.array([0, 0, 0, 1])
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    history = {"loss": [1.0], "accuracy": [0.5], "val_loss": [1.0], "val_accuracy": [0.5]}
    metrics = evaluation_metrics(labels, probabilities, LoopResult(history, 1, 1.0), ["a", "b"])
    assert metrics["test_accuracy"] == 0.75
    assert metrics["test_balanced_accuracy"] == 0.5
    assert metrics["test_per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert metrics["test_per_class_accuracy"] == {"a": 1.0, "b": 0.0}
    assert metrics["test_confusion_matrix"] == [[3, 0], [1, 0]]
