"""``--init-from``: start a classifier from an exported version's weights.

A few dozen images per class cannot train the convolution stages from scratch, but they can
train a head on stages that already learned the images' shapes. The source version's Keras
model is rebuilt from its metadata (architecture, input size, class count), its weights are
read from the SavedModel's variables, and every layer whose weights have the same shapes in
the new model is copied. The output layer is copied only when the class names are the same;
otherwise the new model keeps a new head for its own classes. A different input size
changes the first dense layer's shape, so that layer starts fresh too.

Training then runs in two phases, each with its own early stopping on validation loss:

1. the head: the copied convolution stages (their batch-norm statistics too) are frozen and
   only the dense layers train, at the loop's learning rate. A new output layer starts as
   the nearest-class-mean classifier of the copied layers' features on the training images
   (``imprint_head``): random weights give large random logits on the copied features (a
   first-epoch loss of 7.7 where a zero layer gives ln 6), and a zero layer knows nothing
   of the classes yet.
2. every layer: the convolutions train too, at 0.3 times that learning rate, starting from
   phase 1's best weights; the batch norms stay frozen (inference mode: a few dozen images
   give poor batch statistics). Without phase 1, fine-tuning every layer at the full rate
   behind a new head wiped out what the stages knew (SIGNS digits 3-5 from a 0-2 model, 15
   images per class: held-out accuracy 0.42, chance being 0.33); frozen stages alone
   carried over little to gestures the source never saw (0.49).

Phase 2's weights are kept only when its best validation loss beats phase 1's; it can be
left out (``--frozen-stages``), which is better when the new images look like the source's
(the same gestures under new names) and worse for new ones. When
``--epochs`` is not given, each phase runs at least ``min_steps`` optimizer steps (more
epochs for a small data set: 66 training images make 3 steps an epoch), with patience
scaled alike. Augmentation is the loop's (shifts, small rotations and zooms, brightness; no
flips: a user's classes may be told apart by their side, ``left`` from ``right``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from contract.layout import METADATA_FILE, versions
from contract.metadata import ClassifierMetadata, InitFromSpec, MetadataError, read_metadata
from training.errors import DataError
from training.pipeline import to_unit_float
from training.signs.classifier import ClassifierConfig, build_classifier
from training.signs.custom_loop import FitSetup, LoopConfig, LoopResult, fit_classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceVersion:
    """An exported classifier version to start from."""

    folder: Path
    metadata: ClassifierMetadata

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.class_names)

    def config(self) -> ClassifierConfig:
        """The source's architecture as its metadata records it (defaults where absent)."""
        recorded = self.metadata.hyperparameters.get("model") or {}
        known = {field.name for field in dataclasses.fields(ClassifierConfig)}
        values: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in recorded.items()
            if key in known
        }
        return ClassifierConfig(**values)


def find_source(path: Path) -> SourceVersion:
    """``path`` is a version folder (``models/signs_classifier/3``) or a model folder, whose
    newest version is taken; anything else is a one-line ``DataError``."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"--init-from: no such folder: {path}")
    if not (path / METADATA_FILE).is_file():
        numbers = versions(path)
        if not numbers:
            raise DataError(f"--init-from: {path} is neither a version nor holds versions")
        path = path / str(numbers[-1])
    try:
        metadata = read_metadata(path)
    except MetadataError as error:
        raise DataError(f"--init-from: {error}") from None
    if not isinstance(metadata, ClassifierMetadata):
        raise DataError(f"--init-from: {path} is not a classifier version")
    if not (path / "variables").is_dir():
        raise DataError(f"--init-from: {path} has no SavedModel variables")
    return SourceVersion(path, metadata)


def load_source_model(source: SourceVersion) -> tf.keras.Sequential:
    """The source's Keras model with its exported weights."""
    model = build_classifier(source.metadata.input.height, len(source.class_names), source.config())
    checkpoint = tf.train.Checkpoint(model=model)
    status = checkpoint.read(str(source.folder / "variables" / "variables"))
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as error:
        raise DataError(
            f"--init-from: {source.folder}: its weights do not fit the classifier: {error}"
        ) from None
    return model


def copy_weights(
    source: tf.keras.Sequential, target: tf.keras.Sequential, keep_head: bool
) -> tuple[list[str], list[str], list[str]]:
    """Copy every layer whose weight shapes match (the last layer only when ``keep_head``)
    and freeze the copied layers before the ``Flatten``. Returns the names of the layers
    copied, started fresh and frozen, for the metadata."""
    copied, fresh, frozen = [], [], []
    last = len(target.layers) - 1
    head_start = next(
        (i for i, layer in enumerate(target.layers) if isinstance(layer, tf.keras.layers.Flatten)),
        len(target.layers),
    )
    for position, (old, new) in enumerate(zip(source.layers, target.layers, strict=False)):
        if not new.weights:
            continue
        shapes_match = [w.shape for w in old.weights] == [w.shape for w in new.weights]
        if shapes_match and (position != last or keep_head):
            new.set_weights(old.get_weights())
            copied.append(new.name)
            if position < head_start:
                new.trainable = False
                frozen.append(new.name)
        else:
            if position == last:
                new.set_weights([np.zeros_like(weight) for weight in new.get_weights()])
            fresh.append(new.name)
    return copied, fresh, frozen


def imprint_head(model: tf.keras.Sequential, images: np.ndarray, labels: np.ndarray) -> None:
    """Set a new output layer to the nearest-class-mean classifier of the copied layers'
    features (weight imprinting): class ``c``'s logit is ``s * (f . m_c - |m_c|^2 / 2)``,
    which ranks classes as the squared distance from ``f`` to each class mean ``m_c`` does.
    ``s`` makes the mean margin of the top logit over the average ``IMPRINT_MARGIN``, so
    the first softmax leans towards the nearest class without saturating.
    Features are the last hidden layer's output, in inference mode, over the training
    images (uint8); a class without images keeps a zero column."""
    features_of = tf.keras.Model(model.inputs, model.layers[-2].output)
    features = np.concatenate(
        [
            features_of(to_unit_float(images[start : start + 256]), training=False).numpy()
            for start in range(0, len(images), 256)
        ]
    )
    head = model.layers[-1]
    kernel, bias = (np.zeros_like(weight) for weight in head.get_weights())
    present = np.unique(labels)
    means = np.stack([features[labels == label].mean(axis=0) for label in present])
    offsets = -0.5 * np.sum(means**2, axis=1)
    raw = features @ means.T + offsets
    margin = float(np.mean(raw.max(axis=1) - raw.mean(axis=1)))
    scale = IMPRINT_MARGIN / margin if margin > 0 else 0.0
    kernel[:, present] = scale * means.T
    bias[present] = scale * offsets
    head.set_weights([kernel, bias])


def initialised_builder(
    source: SourceVersion,
    image_size: int,
    class_names: list[str],
    train: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Callable[[], tf.keras.Sequential], InitFromSpec]:
    """A builder of the new model (the source's architecture) starting from the source's
    weights, its new head (if any) imprinted from ``train`` (uint8 images, labels) when
    given, and the ``init_from`` metadata block (its layer counts filled in as it builds)."""
    config = source.config()
    keep_head = class_names == source.class_names
    record = InitFromSpec(
        folder=str(source.folder),
        name=source.metadata.name,
        version=source.metadata.version,
        source_classes=source.class_names,
        new_head=not keep_head,
    )

    def build() -> tf.keras.Sequential:
        model = build_classifier(image_size, len(class_names), config)
        copied, fresh, frozen = copy_weights(load_source_model(source), model, keep_head)
        record.layers_copied, record.layers_fresh = len(copied), fresh
        record.layers_frozen = len(frozen)
        if not keep_head and train is not None:
            imprint_head(model, *train)
        log.info(
            "initialised from %s: %d layers copied (%d frozen), fresh: %s",
            source.folder,
            record.layers_copied,
            record.layers_frozen,
            ", ".join(record.layers_fresh) or "none",
        )
        return model

    return build, record


# The mean margin, in logits, of an imprinted head's top class over the average of all
# classes on the training images (about 0.35 for the top class among six): a soft start.
# Chosen on validation images kept apart (benchmarks/transfer_results.md): a margin of 1
# lifted case (a) from 0.935 to 0.963 and left (b) at 0.631; a margin of 3 lowered (b)
# to 0.555.
IMPRINT_MARGIN = 1.0


@dataclass(frozen=True)
class TransferConfig:
    """The two phases' knobs; recorded in the metadata as ``hyperparameters.transfer``."""

    fine_tune: bool = True  # run phase 2 (every layer but the batch norms)
    # Phase 2's peak learning rate, a fraction of the loop's: on validation images kept
    # apart (benchmarks/transfer_results.md) 0.3 beat 0.1 and 1.0 for new gestures and lost
    # least to the head alone for the same gestures under new names.
    fine_tune_rate: float = 0.3
    # Each phase runs at least this many optimizer steps when --epochs is not given.
    min_steps: int = 300


@dataclass(frozen=True)
class PhaseSummary:
    """What one phase did, for the metadata's ``init_from.phases``."""

    trains: str
    epochs: int
    learning_rate: float
    epochs_run: int
    best_epoch: int
    best_validation_loss: float


def phase_loop(loop: LoopConfig, steps_per_epoch: int, scale: bool, min_steps: int) -> LoopConfig:
    """``loop`` stretched to at least ``min_steps`` steps (patience by the same factor) when
    ``scale``; unchanged otherwise and for data sets already that large."""
    if not scale or loop.epochs * steps_per_epoch >= min_steps:
        return loop
    epochs = math.ceil(min_steps / steps_per_epoch)
    patience = math.ceil(loop.patience * epochs / loop.epochs)
    return dataclasses.replace(loop, epochs=epochs, patience=patience)


def unfreeze_convolutions(model: tf.keras.Model) -> list[str]:
    """Make every layer trainable except the batch norms (kept in inference mode, their
    statistics and scales as phase 1 left them); returns the layers that now train."""
    unfrozen = []
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.trainable = False
        elif layer.weights and not layer.trainable:
            layer.trainable = True
            unfrozen.append(layer.name)
    return unfrozen


def fit_transfer(
    build_model: Callable[[], tf.keras.Model],
    setup: FitSetup,
    loop: LoopConfig,
    *,
    config: TransferConfig = TransferConfig(),
    scale_epochs: bool = True,
) -> tuple[tf.keras.Model, LoopResult, list[PhaseSummary]]:
    """Phase 1 (the head on frozen stages), then phase 2 (every layer at a lower rate), each
    through ``fit_classifier`` with its own checkpoints under ``setup.checkpoint_dir`` (an
    interrupted run resumes in the phase it stopped in). Returns the model with the better
    phase's best weights, the two phases' joined history, and each phase's summary."""
    batch = loop.batch_size * setup.strategy.num_replicas_in_sync
    steps_per_epoch = -(-len(setup.train[1]) // batch)
    head_loop = phase_loop(loop, steps_per_epoch, scale_epochs, config.min_steps)
    setup.progress.note("training the new head on the frozen stages")
    model, head = fit_classifier(build_model, setup.phase("head"), head_loop)
    summaries = [_summary("head", head_loop, head)]
    if not config.fine_tune:
        return model, head, summaries

    head_weights = model.get_weights()
    unfreeze_convolutions(model)
    tune_loop = dataclasses.replace(
        head_loop, learning_rate=loop.learning_rate * config.fine_tune_rate
    )
    setup.progress.note("fine-tuning every layer but the batch norms at a lower learning rate")
    model, tuned = fit_classifier(lambda: model, setup.phase("all"), tune_loop)
    summaries.append(_summary("all but batch norms", tune_loop, tuned))
    history = {key: head.history[key] + tuned.history[key] for key in head.history}
    improved = summaries[1].best_validation_loss < summaries[0].best_validation_loss
    if improved:
        best_epoch = head.epochs_run + tuned.best_epoch
    else:
        model.set_weights(head_weights)
        best_epoch = head.best_epoch
    log.info(
        "kept phase %d's weights (best validation loss %.4f)",
        2 if improved else 1,
        min(s.best_validation_loss for s in summaries),
    )
    resumed = (
        head.epochs_run + tuned.resumed_from_epoch
        if tuned.resumed_from_epoch
        else head.resumed_from_epoch
    )
    result = LoopResult(history, best_epoch, head.seconds + tuned.seconds, resumed)
    return model, result, summaries


def _summary(trains: str, loop: LoopConfig, result: LoopResult) -> PhaseSummary:
    best = result.best_epoch - 1
    return PhaseSummary(
        trains=trains,
        epochs=loop.epochs,
        learning_rate=loop.learning_rate,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        best_validation_loss=result.history["val_loss"][best] if best >= 0 else math.inf,
    )
