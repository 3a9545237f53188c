"""Malaria autoencoder training: resuming an interrupted ``fit()`` where it stopped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from training.distribute import training_precision
from training.malaria.data import CellSplit, MalariaData
from training.malaria.train import (
    MalariaConfig,
    build_parts,
    compiled_training_model,
    fit_model,
    float32_copy,
)

SIZE = 16
CONFIG = MalariaConfig(
    image_size=SIZE,
    filters=(4, 8),
    code_channels=4,
    retrieval_dim=8,
    epochs=3,
    batch_size=8,
    patience=10,
)


def _cells(count: int, seed: int) -> CellSplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)
    return CellSplit(images, np.arange(count) % 2, [f"c{i}" for i in range(count)], [b""] * count)


def _data() -> MalariaData:
    splits = {"train": _cells(32, 0), "validation": _cells(8, 1), "test": _cells(8, 2)}
    return MalariaData(splits, source="synthetic", image_size=SIZE, skipped=0)


def _model() -> keras.Model:
    return compiled_training_model(build_parts(CONFIG), CONFIG)


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


@pytest.mark.parametrize(
    ("policy", "compute_dtype"),
    [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")],
)
def test_mixed_precision_training_step_is_finite_and_exports_in_float32(
    tmp_path: Path, policy: str, compute_dtype: str
) -> None:
    """What a GPU run (float16) and a CPU with native bfloat16 run do, both run here on CPU."""
    with training_precision(policy):
        keras.utils.set_random_seed(0)
        trained = build_parts(CONFIG)
        model = compiled_training_model(trained, CONFIG)
        data = _data()
        history = fit_model(model, data, replace(CONFIG, epochs=1), tmp_path / ".work", 0)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert np.isfinite(history["loss"]).all()
    assert trained.encoder.get_layer("enc_conv0").compute_dtype == compute_dtype
    exported = float32_copy(trained, CONFIG)
    assert exported.encoder.get_layer("enc_conv0").compute_dtype == "float32"
    cells = data.splits["test"].images.astype(np.float32) / 255.0
    np.testing.assert_allclose(exported.autoencoder(cells), trained.autoencoder(cells), atol=2e-2)
