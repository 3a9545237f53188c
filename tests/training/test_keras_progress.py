"""The fit() callback that feeds training progress (see test_progress.py for the rest)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from contract.training_status import STATUS_FILE, status_path
from training.keras_progress import KerasProgress
from training.progress import JobProgress


def test_keras_callback_reports_each_batch_and_epoch(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mean_squared_error")
    progress = JobProgress("malaria", status_path(tmp_path), terminal=False, interval_s=0)
    x = np.ones((8, 3), np.float32)
    model.fit(x, x[:, :1], batch_size=2, epochs=2, verbose=0, callbacks=[KerasProgress(progress)])
    status = json.loads((tmp_path / STATUS_FILE).read_text())
    assert (status["epoch"], status["epochs"], status["step"], status["steps"]) == (2, 2, 4, 4)
    assert status["message"].startswith("malaria epoch 2/2: loss ")
