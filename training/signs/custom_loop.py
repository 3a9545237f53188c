"""Our own classifier training loop: ``tf.GradientTape`` steps run under a ``tf.distribute``
strategy, early stopping on validation loss, and checkpoints that let a run resume.

The same code runs on one CPU (the default strategy costs nothing there), on several GPUs
(``MirroredStrategy``) or on several workers (``MultiWorkerMirroredStrategy``): batches are
split with ``experimental_distribute_dataset``, each replica runs ``strategy.run`` and the
per-replica sums are combined with ``strategy.reduce``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from training.distribute import worker_folder
from training.pipeline import to_unit_float
from training.progress import JobProgress

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation knobs; recorded in the model's metadata as hyperparameters."""

    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3  # peak; cosine decay takes it to zero at the last epoch
    patience: int = 10
    augment: bool = True
    seed: int = 0


@dataclass(frozen=True)
class FitSetup:
    """What a fit trains on and what it runs under: the same for ``fit_classifier`` and for
    each phase of ``transfer.fit_transfer``, which differ only in the model they build and
    their ``LoopConfig``.

    ``train`` and ``validation`` are (uint8 images, labels). ``checkpoint_dir`` holds the
    latest epoch's checkpoint and the best weights. ``strategy``: by default the one in
    scope when the setup is made. ``progress`` shows and records the steps (by default
    shown only). ``class_weights`` (one per class) scale each example's loss, in training
    and in the validation loss that picks the best epoch, so rare classes count as much as
    common ones.
    """

    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    checkpoint_dir: Path
    strategy: tf.distribute.Strategy = field(default_factory=tf.distribute.get_strategy)
    progress: JobProgress = field(default_factory=lambda: JobProgress("classifier"))
    class_weights: np.ndarray | None = None

    def phase(self, name: str) -> FitSetup:
        """This setup with its checkpoints in the subfolder ``name``: one phase of a run
        that fits several times, each resuming on its own."""
        return replace(self, checkpoint_dir=self.checkpoint_dir / name)


@dataclass
class LoopResult:
    """Per-epoch history (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``) and the
    seconds this invocation spent in its epochs."""

    history: dict[str, list[float]]
    best_epoch: int
    seconds: float
    resumed_from_epoch: int = 0

    @property
    def epochs_run(self) -> int:
        return len(self.history["loss"])


def build_augmenter(seed: int) -> tf.keras.Sequential:
    """Small shifts, rotations, zooms and brightness changes.

    No flips: a mirrored hand still shows the same count, but flips would teach the model
    views the camera never produced, and larger rotations would blur gestures together.
    """
    return tf.keras.Sequential(
        [
            tf.keras.layers.RandomTranslation(0.08, 0.08, fill_mode="nearest", seed=seed),
            tf.keras.layers.RandomRotation(0.04, fill_mode="nearest", seed=seed + 1),
            tf.keras.layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 2),
            tf.keras.layers.RandomBrightness(0.1, value_range=(0.0, 1.0), seed=seed + 3),
        ],
        name="augmenter",
    )


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    augmenter: tf.keras.Sequential | None = None,
) -> tf.data.Dataset:
    """uint8 images -> float32 batches in [0, 1]; shuffled and augmented when asked."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))
    options = tf.data.Options()  # in-memory data: several workers split it by element
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(
        lambda x, y: (to_unit_float(x), y), num_parallel_calls=tf.data.AUTOTUNE
    )
    if augmenter is not None:  # one batch at a time: see training.pipeline.training_dataset
        dataset = dataset.map(
            lambda x, y: (tf.clip_by_value(augmenter(x, training=True), 0.0, 1.0), y)
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def fit_classifier(
    build_model: Callable[[], tf.keras.Model], setup: FitSetup, config: LoopConfig
) -> tuple[tf.keras.Model, LoopResult]:
    """Train a logits classifier and return it with its best (lowest validation loss) weights.

    ``setup`` says what it trains on, where its checkpoints go and what it runs under;
    fitting again with the same setup resumes after the last completed epoch.
    """
    if config.epochs < 1 or config.batch_size < 1 or config.patience < 1:
        raise ValueError("epochs, batch_size and patience must be positive")
    strategy, progress = setup.strategy, setup.progress
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_model()
        steps_per_epoch = -(-len(setup.train[1]) // global_batch)
        schedule = tf.keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch
        )
        optimizer = tf.keras.optimizers.Adam(schedule)
        # Slots made up front: lazily inside a traced step they break under several replicas,
        # and a resumed run needs them to exist before the checkpoint is restored.
        optimizer.build(model.trainable_variables)
        state = TrainingState()
    checkpoints = _Checkpoints(
        worker_folder(strategy, setup.checkpoint_dir), model, optimizer, state
    )
    resumed_from = checkpoints.restore_latest()
    history = checkpoints.load_history(resumed_from)

    augmenter = build_augmenter(config.seed) if config.augment else None
    shuffle_seed = config.seed + resumed_from  # a resumed run must not replay epoch 1's order
    train_data = make_dataset(
        *setup.train, global_batch, shuffle_seed=shuffle_seed, augmenter=augmenter
    )
    validation_data = make_dataset(*setup.validation, global_batch)
    distributed_train = strategy.experimental_distribute_dataset(train_data)
    distributed_validation = strategy.experimental_distribute_dataset(validation_data)
    train_step, evaluation_step = make_steps(
        model, optimizer, strategy, distributed_train.element_spec, setup.class_weights
    )

    started = time.perf_counter()
    for epoch in range(int(state.epoch.numpy()), config.epochs):
        if int(state.stale_epochs.numpy()) >= config.patience:
            log.info("early stop: no better validation loss for %d epochs", config.patience)
            break
        progress.start_epoch(epoch + 1, config.epochs, steps_per_epoch)
        train_stats = _run_epoch(train_step, distributed_train, progress)
        validation_stats = _run_epoch(evaluation_step, distributed_validation, None)
        for key, value in zip(("loss", "accuracy"), train_stats, strict=True):
            history[key].append(value)
        for key, value in zip(("val_loss", "val_accuracy"), validation_stats, strict=True):
            history[key].append(value)
        state.record_epoch(validation_stats[0])
        if int(state.stale_epochs.numpy()) == 0:
            checkpoints.save_best()
        checkpoints.save_latest(history)
        progress.end_epoch(
            "loss {:.4f} acc {:.4f} | val_loss {:.4f} val_acc {:.4f}".format(
                *train_stats, *validation_stats
            )
        )
    checkpoints.restore_best()
    result = LoopResult(
        history=history,
        best_epoch=int(state.best_epoch.numpy()),
        seconds=time.perf_counter() - started,
        resumed_from_epoch=resumed_from,
    )
    return model, result


def predict_probabilities(
    model: tf.keras.Model, images: np.ndarray, batch_size: int = 128
) -> np.ndarray:
    """Softmax probabilities for uint8 images, batched through one traced function."""
    predict = tf.function(lambda x: tf.nn.softmax(model(x, training=False)))
    dataset = make_dataset(images, np.zeros(len(images), np.int64), batch_size)
    return np.concatenate([predict(batch).numpy() for batch, _ in dataset])


class TrainingState(tf.Module):
    """Loop counters kept in the checkpoint so a resumed run continues where it stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_loss = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
        self.stale_epochs = tf.Variable(0, dtype=tf.int64, trainable=False)

    def record_epoch(self, validation_loss: float) -> None:
        self.epoch.assign_add(1)
        if validation_loss < float(self.best_loss.numpy()):
            self.best_loss.assign(validation_loss)
            self.best_epoch.assign(self.epoch)
            self.stale_epochs.assign(0)
        else:
            self.stale_epochs.assign_add(1)


class _Checkpoints:
    """Latest-epoch and best-weights checkpoints plus the history JSON, in one folder."""

    def __init__(
        self,
        folder: Path,
        model: tf.keras.Model,
        optimizer: tf.keras.optimizers.Optimizer,
        state: TrainingState,
    ) -> None:
        self.folder = Path(folder)
        latest = tf.train.Checkpoint(model=model, optimizer=optimizer, state=state)
        self.latest = tf.train.CheckpointManager(latest, str(self.folder / "latest"), 2)
        self.best = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model), str(self.folder / "best"), 1
        )

    def restore_latest(self) -> int:
        """Restore the last completed epoch; returns how many epochs it had (0 when fresh)."""
        if self.latest.latest_checkpoint is None:
            return 0
        self.latest.checkpoint.restore(self.latest.latest_checkpoint).expect_partial()
        epochs_done = int(self.latest.checkpoint.state.epoch.numpy())
        log.info("resuming from %s after epoch %d", self.latest.latest_checkpoint, epochs_done)
        return epochs_done

    def load_history(self, epochs_done: int) -> dict[str, list[float]]:
        path = self.folder / HISTORY_FILE
        saved = json.loads(path.read_text()) if epochs_done and path.is_file() else {}
        keys = ("loss", "accuracy", "val_loss", "val_accuracy")
        return {key: list(saved.get(key, []))[:epochs_done] for key in keys}

    def save_latest(self, history: dict[str, list[float]]) -> None:
        self.latest.save(checkpoint_number=int(self.latest.checkpoint.state.epoch.numpy()))
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / HISTORY_FILE).write_text(json.dumps(history))

    def save_best(self) -> None:
        self.best.save()

    def restore_best(self) -> None:
        if self.best.latest_checkpoint is not None:
            self.best.checkpoint.restore(self.best.latest_checkpoint).expect_partial()


def make_steps(
    model: tf.keras.Model,
    optimizer: tf.keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    element_spec: tuple[tf.TypeSpec, tf.TypeSpec],
    class_weights: np.ndarray | None = None,
) -> tuple[Callable, Callable]:
    """Traced train and evaluation steps; each returns global ``[loss sum, correct, count]``."""
    cross_entropy = tf.keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="none"
    )
    weights = None if class_weights is None else tf.constant(class_weights, tf.float32)

    def loss_function(labels, logits):
        per_example = cross_entropy(labels, logits)
        return per_example if weights is None else per_example * tf.gather(weights, labels)

    def batch_sums(labels, logits, per_example_loss):
        predicted = tf.argmax(logits, axis=-1, output_type=labels.dtype)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([tf.reduce_sum(per_example_loss), correct, count])

    def replica_train(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example_loss = loss_function(labels, logits)
            loss = tf.nn.compute_average_loss(per_example_loss)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return batch_sums(labels, logits, per_example_loss)

    def replica_evaluate(images, labels):
        logits = model(images, training=False)
        return batch_sums(labels, logits, loss_function(labels, logits))

    def distributed(replica_function):
        def step(batch):
            per_replica = strategy.run(replica_function, args=batch)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return tf.function(step, input_signature=[element_spec])

    return distributed(replica_train), distributed(replica_evaluate)


def _run_epoch(
    step: Callable, distributed_dataset: Iterable, progress: JobProgress | None
) -> tuple[float, float]:
    """Mean loss and accuracy over one pass; each step reported to ``progress`` if given."""
    totals = np.zeros(3)
    for batch in distributed_dataset:
        totals += step(batch).numpy()
        if progress is not None:
            progress.advance(loss=totals[0] / totals[2], acc=totals[1] / totals[2])
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])
