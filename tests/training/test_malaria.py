"""Malaria autoencoder training: resuming an interrupted ``fit()`` where it stopped."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from training.autoencoder import build_autoencoder
from training.malaria import MalariaConfig, compiled_training_model, fit_model
from training.malaria_data import CellSplit, MalariaData

SIZE = 16
CONFIG = MalariaConfig(
    image_size=SIZE, filters=(4, 8), code_channels=8, epochs=3, batch_size=8, patience=10
)


def _cells(count: int, seed: int) -> CellSplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)
    return CellSplit(images, np.arange(count) % 2, [f"c{i}" for i in range(count)], [b""] * count)


def _data() -> MalariaData:
    splits = {"train": _cells(32, 0), "validation": _cells(8, 1), "test": _cells(8, 2)}
    return MalariaData(splits, source="synthetic", image_size=SIZE, skipped=0)


def _model() -> keras.Model:
    parts = build_autoencoder(SIZE, CONFIG.filters, CONFIG.code_channels)
    return compiled_training_model(parts, CONFIG)


class Interrupt(keras.callbacks.Callback):
    """Stops the run like Ctrl-C at the end of epoch ``after`` (1-based), keeping its weights."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.weights: list[np.ndarray] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == self.after:
            self.weights = [np.array(w) for w in self.model.get_weights()]
            raise KeyboardInterrupt


class FirstWeights(keras.callbacks.Callback):
    """Records the weights the resumed run starts from (after BackupAndRestore loaded them)."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.weights = [np.array(w) for w in self.model.get_weights()]


def test_interrupted_fit_resumes_after_its_last_finished_epoch(tmp_path: Path) -> None:
    data = _data()
    steps = len(data.splits["train"].images) // CONFIG.batch_size
    work_dir = tmp_path / ".work"
    interrupt = Interrupt(after=2)
    with pytest.raises(KeyboardInterrupt):
        fit_model(_model(), data, CONFIG, work_dir, 0, [interrupt])
    assert (work_dir / "backup").is_dir()

    resumed_model = _model()  # a fresh process would build a new model
    first_weights = FirstWeights()
    history = fit_model(resumed_model, data, CONFIG, work_dir, 0, [first_weights])

    assert len(history["loss"]) == 1  # only epoch 3 ran again
    assert int(resumed_model.optimizer.iterations) == CONFIG.epochs * steps
    assert len(first_weights.weights) == len(interrupt.weights)
    for restored, saved in zip(first_weights.weights, interrupt.weights, strict=True):
        np.testing.assert_array_equal(restored, saved)
    assert not (work_dir / "backup").exists()  # a finished run removes its backup
