"""The classifier job: load, train with our own loop, score on the held-out test set, export.

It trains on the SIGNS data by default and on a user's class folders alike: the class
names, their order and the input size go into the metadata the server reads, so a model
trained on other classes is served under its own names as a new version of the same model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from contract.layout import CLASSIFIER, REPORT_DIR
from contract.metadata import ClassifierFields, InputSpec, signature_specs
from contract.signatures import CLASSIFIER_OUTPUTS
from training import reports
from training.distribute import strategy_from_environment, worker_folder
from training.export import write_version
from training.options import JobOptions
from training.progress import JobProgress
from training.signs import transfer
from training.signs import trust as signs_trust
from training.signs.classifier import ClassifierConfig, build_classifier
from training.signs.custom_loop import (
    FitSetup,
    LoopConfig,
    LoopResult,
    fit_classifier,
    predict_probabilities,
)
from training.signs.data import SignsData, SignsSplits, load_signs
from training.signs.signatures import save_classifier

log = logging.getLogger(__name__)

MODEL_NAME = CLASSIFIER
DEFAULT_IMAGE_SIZE = 64
QUICK_EPOCHS = 3
QUICK_IMAGES_PER_CLASS = 30  # of the training split; validation and test stay whole
# Classes weigh their examples in the loss only when their counts differ by more than this
# ratio: a balanced set (SIGNS: 180 per class) trains exactly as without weights.
IMBALANCE_RATIO = 1.2
TRANSFER = transfer.TransferConfig()  # --init-from's two phases


@dataclass(frozen=True)
class SignsRun:
    """Everything that decides a run's result; its hash names the checkpoint folder."""

    source: str
    image_size: int
    seed: int
    quick: bool
    model: ClassifierConfig
    loop: LoopConfig
    init_from: str | None = None
    class_weights: tuple[float, ...] | None = None

    def fingerprint(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_signs(
    options: JobOptions,
    *,
    progress: JobProgress | None = None,
    init_from: Path | None = None,
    fine_tune: bool = True,
) -> Path:
    """Train the classifier and export a new version; returns the version folder.

    ``init_from`` (an exported version or model folder) gives the starting weights and a
    new output layer when the classes differ; the head trains first on the frozen stages,
    then every layer at a lower rate unless not ``fine_tune`` (training/signs/transfer.py).
    An interrupted run
    leaves its checkpoints under ``<out>/.checkpoints/``; running the same command again
    resumes from the last completed epoch.
    """
    data, out_dir, seed, quick = options.data, options.out, options.seed, options.quick
    epochs = options.epochs
    image_size = DEFAULT_IMAGE_SIZE if options.image_size is None else options.image_size
    source = transfer.find_source(init_from) if init_from is not None else None
    config = source.config() if source is not None else ClassifierConfig()
    if image_size < config.downscale:
        raise ValueError(f"--image-size must be at least {config.downscale}, got {image_size}")
    progress = progress or JobProgress(MODEL_NAME)
    progress.note("loading images")
    tf.keras.utils.set_random_seed(seed)
    splits = load_signs(data, image_size, seed)
    if quick:
        splits.train = _per_class_subset(splits.train, QUICK_IMAGES_PER_CLASS, seed)
    class_names = splits.class_names
    weights = class_weights(splits.train.labels, len(class_names))
    loop = LoopConfig(epochs=epochs or (QUICK_EPOCHS if quick else LoopConfig.epochs), seed=seed)
    run = SignsRun(
        splits.train.source,
        image_size,
        seed,
        quick,
        config,
        loop,
        str(source.folder) if source is not None else None,
        None if weights is None else tuple(float(w) for w in weights),
    )
    log.info("classifier splits %s from %s", splits.sizes(), splits.train.source)

    transfer_config = dataclasses.replace(TRANSFER, fine_tune=fine_tune)
    if source is not None:
        build, init_record = transfer.initialised_builder(
            source, image_size, class_names, (splits.train.images, splits.train.labels)
        )
    else:
        init_record = None

        def build() -> tf.keras.Sequential:
            return build_classifier(image_size, len(class_names), run.model)

    checkpoint_dir = Path(out_dir) / ".checkpoints" / f"{MODEL_NAME}-{run.fingerprint()}"
    setup = FitSetup(
        train=(splits.train.images, splits.train.labels),
        validation=(splits.validation.images, splits.validation.labels),
        checkpoint_dir=checkpoint_dir,
        strategy=strategy_from_environment(),
        progress=progress,
        class_weights=weights,
    )
    if source is None:
        model, result = fit_classifier(build, setup, loop)
    else:
        model, result, phases = transfer.fit_transfer(
            build, setup, loop, config=transfer_config, scale_epochs=epochs is None and not quick
        )
        if init_record is not None:  # always, when there is a source
            init_record.phases = [asdict(phase) for phase in phases]
    progress.note("evaluating on the held-out test images and exporting")
    probabilities = predict_probabilities(model, splits.test.images)
    metrics = evaluation_metrics(splits.test.labels, probabilities, result, class_names)
    log.info("held-out test accuracy %.4f on %d images", metrics["test_accuracy"], len(splits.test))
    described = (
        f"images of the classes {', '.join(class_names)} like {run.source}"
        if splits.train.layout == "class folders"
        else signs_trust.SIGNS_DESCRIPTION
    )
    trust, calibration, ood_spec, ood_scores = signs_trust.calibrate(
        model, splits, data, seed, described
    )
    metrics.update(calibration.as_metrics())
    metrics.update(ood_spec.as_metrics())

    fields = build_fields(run, splits, metrics)
    fields.calibration = calibration
    fields.ood = ood_spec
    fields.init_from = init_record
    if source is not None:
        fields.hyperparameters["transfer"] = asdict(transfer_config)

    def write_payload(folder: Path) -> None:
        save_classifier(model, image_size, folder, trust)
        write_report(folder / REPORT_DIR, fields, metrics, result)
        signs_trust.write_plots(folder / REPORT_DIR, calibration, ood_spec, ood_scores)

    # In a multi-worker run only the chief exports into out_dir; the others into scratch.
    version_dir = write_version(
        worker_folder(setup.strategy, out_dir), MODEL_NAME, write_payload, fields
    )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: the next run starts afresh
    with contextlib.suppress(OSError):  # drop the parent too, unless other runs use it
        checkpoint_dir.parent.rmdir()
    return version_dir


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray | None:
    """``n / (classes * count)`` per class (mean 1 over the examples) when the training
    counts are imbalanced beyond ``IMBALANCE_RATIO``; None when they are about even."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if counts.min() * IMBALANCE_RATIO >= counts.max():
        return None
    return (counts.sum() / (n_classes * np.maximum(counts, 1))).astype(np.float32)


def per_class_scores(confusion: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Precision, recall and support of each class from a confusion matrix (rows: truth)."""
    predicted_counts, true_counts = confusion.sum(axis=0), confusion.sum(axis=1)
    return {
        name: {
            "precision": float(confusion[index, index] / max(1, predicted_counts[index])),
            "recall": float(confusion[index, index] / max(1, true_counts[index])),
            "support": int(true_counts[index]),
        }
        for index, name in enumerate(class_names)
    }


def evaluation_metrics(
    labels: np.ndarray, probabilities: np.ndarray, result: LoopResult, class_names: list[str]
) -> dict[str, Any]:
    """Held-out test scores plus the training summary the report and metadata share."""
    predicted = probabilities.argmax(axis=1)
    n_classes = len(class_names)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = per_class_scores(confusion, class_names)
    best = result.best_epoch - 1
    return {
        "test_accuracy": float((predicted == labels).mean()),
        "test_images": len(labels),
        "test_balanced_accuracy": float(np.mean([s["recall"] for s in per_class.values()])),
        "test_per_class": per_class,
        "test_per_class_accuracy": {name: s["recall"] for name, s in per_class.items()},
        "test_confusion_matrix": confusion.tolist(),
        "validation_accuracy": result.history["val_accuracy"][best] if best >= 0 else None,
        "validation_loss": result.history["val_loss"][best] if best >= 0 else None,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "resumed_from_epoch": result.resumed_from_epoch,
        "training_seconds": round(result.seconds, 1),
    }


def build_fields(run: SignsRun, splits: SignsSplits, metrics: dict[str, Any]) -> ClassifierFields:
    """The version's metadata before its trust blocks: input, signature, classes, and the
    run's data, configuration and held-out metrics."""
    size = run.image_size
    separate_test = splits.test.source != splits.train.source
    return ClassifierFields(
        input=InputSpec.square(size),
        signatures=signature_specs(CLASSIFIER_OUTPUTS),
        class_names=splits.class_names,
        data={
            "source": run.source,
            "layout": splits.train.layout,
            "class_counts": splits.class_counts(),
            "skipped_files": splits.skipped[:20],
            "test_source": splits.test.source,
            "test_split": "separate file" if separate_test else "stratified hold-out",
            "skipped_images": len(splits.skipped),
            "split_sizes": splits.sizes(),
            "quick_subset": run.quick,
        },
        hyperparameters={
            "image_size": size,
            "seed": run.seed,
            "optimizer": "Adam, cosine learning-rate decay to 0 over the epochs",
            "loss": "sparse categorical cross-entropy (+ L2)"
            + (", class-weighted" if run.class_weights else ""),
            "class_weights": (
                dict(zip(splits.class_names, run.class_weights, strict=True))
                if run.class_weights
                else None
            ),
            "init_from": run.init_from,
            "model": asdict(run.model),
            "loop": asdict(run.loop),
        },
        metrics={key: value for key, value in metrics.items() if key != "test_confusion_matrix"},
    )


def write_report(
    folder: Path, fields: ClassifierFields, metrics: dict[str, Any], result: LoopResult
) -> None:
    reports.write_json(folder / "config.json", fields.run_config())
    reports.write_json(folder / "metrics.json", {**metrics, "history": result.history})
    reports.plot_confusion_matrix(
        np.asarray(metrics["test_confusion_matrix"]),
        fields.class_names,
        folder / "confusion_matrix.png",
        f"held-out test, accuracy {metrics['test_accuracy']:.3f}",
    )
    reports.plot_learning_curves(result.history, folder / "learning_curves.png", "classifier")


def _per_class_subset(data: SignsData, per_class: int, seed: int) -> SignsData:
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(data.labels == label))[:per_class]
        for label in np.unique(data.labels)
    ]
    return data.subset(np.sort(np.concatenate(chosen)))
