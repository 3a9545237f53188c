"""``--init-from``: start a classifier from an exported version's weights.

A few dozen images per class cannot train the convolution stages from scratch, but they can
train a head on stages that already learned the images' shapes. The source version's Keras model is
rebuilt from its metadata (architecture, input size, class count), its weights are read
from the SavedModel's variables, and every layer whose weights have the same shapes in the
new model is copied. The output layer is copied only when the class names are the same;
otherwise the new model keeps a freshly initialised head for its own classes. A different
input size changes the first dense layer's shape, so that layer starts fresh too.

The copied convolution stages are then frozen (their batch-norm statistics too) and only
the dense head trains: fine-tuning every layer at the training loop's learning rate on a
few dozen images wiped out what the stages knew (SIGNS digits 3-5 from a 0-2 model, 15
images per class: held-out accuracy 0.42, chance being 0.33). A new output layer starts at zero, so
the first logits are 0 rather than the large random ones a random layer gives on the copied
features (a first-epoch loss of 7.7 instead of ln 6). On 15 images per class of the SIGNS
gestures under new names, validation accuracy reached 0.99 in 40 epochs from a zero start
and 0.96 in 100 from a random one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from contract.layout import METADATA_FILE, versions
from contract.metadata import ClassifierMetadata, InitFromSpec, MetadataError, read_metadata
from training.errors import DataError
from training.signs.classifier import ClassifierConfig, build_classifier

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
        values = {
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


def initialised_builder(
    source: SourceVersion, image_size: int, class_names: list[str]
) -> tuple[Callable[[], tf.keras.Sequential], InitFromSpec]:
    """A builder of the new model (the source's architecture) starting from the source's
    weights, and the ``init_from`` metadata block (its layer counts filled in as it builds)."""
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
        log.info(
            "initialised from %s: %d layers copied (%d frozen), fresh: %s",
            source.folder,
            record.layers_copied,
            record.layers_frozen,
            ", ".join(record.layers_fresh) or "none",
        )
        return model

    return build, record
