"""``fit()``'s batches and epochs as :class:`training.progress.JobProgress` steps.

Apart from ``training.progress`` so that module stays free of Keras: the CLI imports it
before any job and must answer ``--help`` and argument errors without loading TensorFlow.
"""

from __future__ import annotations

import keras

from training.progress import JobProgress


class KerasProgress(keras.callbacks.Callback):
    """Feeds ``fit()``'s batches and epochs to a :class:`JobProgress` (use ``verbose=0``)."""

    def __init__(self, progress: JobProgress) -> None:
        super().__init__()
        self.progress = progress

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.progress.start_epoch(epoch + 1, self.params["epochs"], self.params["steps"])

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        metrics: dict[str, float] = {} if loss is None else {"loss": float(loss)}
        self.progress.advance(1, **metrics)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        items = sorted((logs or {}).items())
        self.progress.end_epoch(" ".join(f"{key} {float(value):.4g}" for key, value in items))
