"""Train the malaria denoising autoencoder with ``compile()``/``fit()`` and export it.

Inputs are Gaussian-noised cells, targets the clean cells. Validation (fixed noise) drives
early stopping and checkpointing; the held-out test split is only touched by the final
report. ``BackupAndRestore`` keeps a backup under ``<out>/malaria_autoencoder/.work`` so an
interrupted run resumes from its last finished epoch.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from contract.layout import AUTOENCODER, REPORT_DIR
from contract.metadata import AutoencoderFields, BottleneckSpec, InputSpec, signature_specs
from contract.pixels import scale
from contract.signatures import AUTOENCODER_OUTPUTS
from training import reports
from training.distribute import (
    multi_worker_requested,
    strategy_from_environment,
    training_precision,
)
from training.export import write_version
from training.keras_progress import KerasProgress
from training.malaria import ood as malaria_ood
from training.malaria import report as malaria_report
from training.malaria.autoencoder import (
    SYMMETRIES,
    AutoencoderParts,
    build_autoencoder,
)
from training.malaria.contrastive import (
    contrastive_example,
    joint_model,
    nt_xent,
    projection_head,
)
from training.malaria.data import MalariaData, load_malaria
from training.malaria.signatures import save_autoencoder
from training.options import JobOptions
from training.pipeline import frozen_dataset, training_dataset
from training.progress import JobProgress

MODEL_NAME = AUTOENCODER
REPORT_SIGMAS = (0.05, 0.1, 0.2)


@dataclass(frozen=True)
class MalariaConfig:
    image_size: int = 48  # smaller inputs blur the small dark parasite spots
    filters: tuple[int, ...] = (32, 64)
    code_channels: int = 32  # bottleneck 12x12x32 = 4,608 values for 6,912 input values (1.5x)
    retrieval_dim: int = 64  # the encode signature's code (what the index holds)
    # validation loss still falls at 8 (docs/history/training-speed.md, "ten minutes")
    epochs: int = 9
    batch_size: int = 128
    learning_rate: float = 2e-3
    loss: str = "mean_squared_error"
    noise_sigma_range: tuple[float, float] = (0.0, 0.2)
    contrastive_weight: float = 0.05
    temperature: float = 0.1
    patience: int = 3
    data_fraction: float = 1.0
    jit_compile: bool | None = None  # None: XLA on a GPU only (2x CPU time on CPU)
    precision_policy: str | None = None  # None: training_policy() picks by device


QUICK = MalariaConfig(epochs=2, data_fraction=0.08)
MONITOR = "val_images_loss"  # early stopping and checkpoints follow the denoising loss


def config_for(options: JobOptions) -> MalariaConfig:
    """The quick or full configuration, with the epochs and input size asked for."""
    config = QUICK if options.quick else MalariaConfig()
    if options.epochs is not None:
        config = dataclasses.replace(config, epochs=options.epochs)
    if options.image_size is not None:
        config = dataclasses.replace(config, image_size=options.image_size)
    return config


def build_parts(config: MalariaConfig) -> AutoencoderParts:
    return build_autoencoder(
        config.image_size, config.filters, config.code_channels, config.retrieval_dim
    )


def use_xla(config: MalariaConfig) -> bool:
    """XLA-compile the train step on a GPU. On CPU an XLA step measured twice the CPU time
    of TensorFlow's own (oneDNN) kernels, so it stays off there unless asked for."""
    if config.jit_compile is not None:
        return config.jit_compile
    return bool(tf.config.list_physical_devices("GPU"))


def compiled_training_model(parts: AutoencoderParts, config: MalariaConfig) -> keras.Model:
    """The joint denoising + contrastive model, compiled with an explicit optimizer."""
    model = joint_model(parts, projection_head(parts.code_dim))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss={"images": config.loss, "projections": nt_xent(config.temperature)},
        loss_weights={"images": 1.0, "projections": config.contrastive_weight},
        jit_compile=use_xla(config),
    )
    return model


def fit_model(
    model: keras.Model,
    data: MalariaData,
    config: MalariaConfig,
    work_dir: Path,
    seed: int,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    progress: JobProgress | None = None,
) -> dict[str, list[float]]:
    """``fit()`` with backup/restore, best-weight checkpoints, early stopping and TensorBoard;
    ``extra_callbacks`` run after those (after the epoch's backup is written). ``progress``
    shows and records the steps (default: shown only) instead of Keras' own bar."""
    train_images = data.splits["train"].images
    make_example = contrastive_example(config.noise_sigma_range)
    train = training_dataset(
        train_images, batch_size=config.batch_size, seed=seed, make_example=make_example
    )
    validation = frozen_dataset(
        data.splits["validation"].images, batch_size=config.batch_size, make_example=make_example
    )
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work_dir / "backup")),
        keras.callbacks.ModelCheckpoint(
            str(work_dir / "best.weights.h5"),
            monitor=MONITOR,
            mode="min",
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.EarlyStopping(
            monitor=MONITOR, mode="min", patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.TensorBoard(str(work_dir / "tensorboard")),
        KerasProgress(progress or JobProgress(MODEL_NAME)),
        *extra_callbacks,
    ]
    history = model.fit(
        train,
        epochs=config.epochs,
        steps_per_epoch=max(1, len(train_images) // config.batch_size),
        validation_data=validation,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=0,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def float32_copy(parts: AutoencoderParts, config: MalariaConfig) -> AutoencoderParts:
    """The same weights in float32 layers: a model trained in mixed precision is exported
    in float32, so the server's outputs do not depend on the device that trained it."""
    copy = build_parts(config)
    for source, target in (
        (parts.encoder, copy.encoder),
        (parts.decoder, copy.decoder),
        (parts.embedder, copy.embedder),
    ):
        target.set_weights(source.get_weights())
    return copy


def bottleneck_summary(parts: AutoencoderParts) -> BottleneckSpec:
    """The decoder's code size against the input's: how much the autoencoder compresses."""
    shape = parts.bottleneck_shape
    values = int(np.prod(shape))
    input_values = int(np.prod(parts.autoencoder.input.shape[1:]))
    return BottleneckSpec(
        shape=list(shape),
        values=values,
        input_values=input_values,
        compression=round(input_values / values, 2),
    )


def denoising_metrics(parts: AutoencoderParts, clean: np.ndarray, seed: int) -> dict[str, Any]:
    """PSNR/SSIM of reconstruction (clean input) and of denoising at each report sigma."""
    clean_float = tf.constant(scale(clean))
    rng = np.random.default_rng(seed)

    def quality(prediction: tf.Tensor) -> dict[str, float]:
        return {
            "psnr": float(tf.reduce_mean(tf.image.psnr(prediction, clean_float, max_val=1.0))),
            "ssim": float(tf.reduce_mean(tf.image.ssim(prediction, clean_float, max_val=1.0))),
        }

    def predict(images: tf.Tensor) -> tf.Tensor:
        return parts.autoencoder.predict(images, batch_size=256, verbose=0)

    metrics: dict[str, Any] = {
        "test_cells": len(clean),
        "reconstruction": quality(predict(clean_float)),
    }
    for sigma in REPORT_SIGMAS:
        noise = rng.normal(0, sigma, clean.shape).astype(np.float32)
        noisy = tf.clip_by_value(clean_float + noise, 0.0, 1.0)
        noisy_quality, denoised_quality = quality(noisy), quality(predict(noisy))
        metrics[f"denoise_sigma_{sigma}"] = {
            "noisy": noisy_quality,
            "denoised": denoised_quality,
            "psnr_gain_db": denoised_quality["psnr"] - noisy_quality["psnr"],
        }
    return metrics


def write_report(
    report_dir: Path,
    parts: AutoencoderParts,
    data: MalariaData,
    config: MalariaConfig,
    history: dict[str, list[float]],
    metrics: dict[str, Any],
    seed: int,
) -> None:
    reports.write_json(report_dir / "config.json", {**dataclasses.asdict(config), "seed": seed})
    reports.write_json(report_dir / "metrics.json", metrics)
    reports.plot_learning_curves(history, report_dir / "learning_curves.png", "malaria autoencoder")
    clean = scale(data.splits["test"].images[:8])
    noisy = np.clip(clean + np.random.default_rng(seed).normal(0, 0.1, clean.shape), 0, 1)
    denoised = parts.autoencoder.predict(noisy.astype(np.float32), verbose=0)
    reports.plot_image_grid(
        [list(clean), list(noisy), list(denoised)],
        report_dir / "denoising_grid.png",
        row_titles=["clean", "noisy sigma 0.1", "denoised"],
    )


def train_malaria(options: JobOptions, *, progress: JobProgress | None = None) -> Path:
    """Train, evaluate on held-out cells, export a new version; return its folder."""
    if multi_worker_requested():
        raise ValueError(
            "the autoencoder trains with Keras fit(), which does not run under"
            " MultiWorkerMirroredStrategy (keras-team/keras#20585): unset TF_CONFIG to train"
            " it on one machine (several local GPUs are still used)"
        )
    data, out_dir, seed = options.data, options.out, options.seed
    config = config_for(options)
    progress = progress or JobProgress(MODEL_NAME)
    progress.note("loading cells")
    keras.utils.set_random_seed(seed)
    cells = load_malaria(data, config.image_size, seed=seed, fraction=config.data_fraction)
    work_dir = Path(out_dir) / MODEL_NAME / ".work"
    strategy = strategy_from_environment()
    with training_precision(config.precision_policy) as precision, strategy.scope():
        trained = build_parts(config)
        model = compiled_training_model(trained, config)
        history = fit_model(model, cells, config, work_dir, seed, progress=progress)
    parts = float32_copy(trained, config) if precision != "float32" else trained
    progress.note("evaluating on held-out cells and exporting")
    metrics = denoising_metrics(parts, cells.splits["test"].images, seed)
    metrics["epochs_run"] = len(history.get("loss", []))
    metrics["best_val_images_loss"] = min(history.get(MONITOR, [float("nan")]))
    score, ood_spec, ood_scores = malaria_ood.calibrate(parts, cells, data, seed)
    metrics.update(ood_spec.as_metrics())

    def write_payload(version_dir: Path) -> None:
        save_autoencoder(parts, config.image_size, version_dir, score)
        report_dir = version_dir / REPORT_DIR
        write_report(report_dir, parts, cells, config, history, metrics, seed)
        malaria_report.write_trust_plots(report_dir, parts, cells, seed, ood_spec, ood_scores)
        if (work_dir / "tensorboard").exists():
            shutil.copytree(work_dir / "tensorboard", report_dir / "tensorboard")

    fields = AutoencoderFields(
        input=InputSpec.square(config.image_size),
        signatures=signature_specs(AUTOENCODER_OUTPUTS),
        code_dim=parts.code_dim,
        bottleneck=bottleneck_summary(parts),
        data={**cells.summary(), "seed": seed},
        hyperparameters={
            **dataclasses.asdict(config),
            "optimizer": "adam",
            "encode_symmetry_views": SYMMETRIES,
            "precision": precision,
        },
        metrics=metrics,
        ood=ood_spec,
    )
    version_dir = write_version(out_dir, MODEL_NAME, write_payload, fields)
    shutil.rmtree(work_dir, ignore_errors=True)
    return version_dir
