"""The custom loop: early stopping bookkeeping, best weights, resume, augmentation, replicas."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tests.paths import REPO_ROOT
from tests.training.dataset_graph import dataset_steps
from training.distribute import is_chief, worker_folder
from training.signs import custom_loop
from training.signs.classifier import ClassifierConfig, build_classifier
from training.signs.custom_loop import (
    HISTORY_FILE,
    FitSetup,
    LoopConfig,
    TrainingState,
    build_augmenter,
    fit_classifier,
    make_dataset,
    make_steps,
    predict_probabilities,
)

SMALL = ClassifierConfig(filters=(8, 16), dense_units=16, dropout=0.1)


def _toy_data(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes told apart by which colour channel is bright."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    images = rng.integers(0, 80, (count, 16, 16, 3)).astype(np.uint8)
    images[np.arange(count), :, :, labels] += 150
    return images, labels.astype(np.int64)


def _build() -> tf.keras.Model:
    return build_classifier(16, 3, SMALL)


def test_training_state_tracks_best_epoch_and_patience() -> None:
    state = TrainingState()
    for loss in (1.0, 0.5, 0.7, 0.8):
        state.record_epoch(loss)
    assert int(state.epoch.numpy()) == 4
    assert int(state.best_epoch.numpy()) == 2
    assert int(state.stale_epochs.numpy()) == 2


def test_fit_learns_and_keeps_the_best_weights(tmp_path: Path) -> None:
    tf.keras.utils.set_random_seed(0)
    train, validation = _toy_data(48, 1), _toy_data(24, 2)
    config = LoopConfig(epochs=6, batch_size=16, learning_rate=3e-3, augment=False)
    model, result = fit_classifier(_build, FitSetup(train, validation, tmp_path), config)
    assert result.epochs_run == 6
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    probabilities = predict_probabilities(model, validation[0])
    restored_loss = -np.mean(np.log(probabilities[np.arange(24), validation[1]]))
    best_loss = result.history["val_loss"][result.best_epoch - 1]
    assert best_loss == min(result.history["val_loss"])
    assert restored_loss == pytest.approx(best_loss, rel=1e-3)
    assert result.history["val_accuracy"][result.best_epoch - 1] > 0.6


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch) -> None:
    setup = FitSetup(_toy_data(32, 3), _toy_data(12, 4), tmp_path)
    config = LoopConfig(epochs=4, batch_size=16, patience=10, augment=False)
    real_run_epoch = custom_loop._run_epoch
    calls = {"count": 0}

    def interrupt_in_third_epoch(step, dataset, description):
        calls["count"] += 1
        if calls["count"] == 5:  # two calls (train, validation) per epoch
            raise KeyboardInterrupt
        return real_run_epoch(step, dataset, description)

    monkeypatch.setattr(custom_loop, "_run_epoch", interrupt_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit_classifier(_build, setup, config)
    first_history = json.loads((tmp_path / HISTORY_FILE).read_text())
    assert len(first_history["loss"]) == 2

    monkeypatch.setattr(custom_loop, "_run_epoch", real_run_epoch)
    _, result = fit_classifier(_build, setup, config)
    assert result.resumed_from_epoch == 2
    assert result.epochs_run == 4
    assert result.history["loss"][:2] == first_history["loss"]


def test_one_seed_gives_the_same_augmented_batches() -> None:
    def batches() -> list[np.ndarray]:
        tf.keras.utils.set_random_seed(2)
        images = np.random.default_rng(2).integers(0, 256, (96, 16, 16, 3), dtype=np.uint8)
        dataset = make_dataset(
            images, np.arange(96) % 6, 4, shuffle_seed=2, augmenter=build_augmenter(seed=2)
        )
        return [x.numpy() for x, _ in dataset]

    for one, other in zip(batches(), batches(), strict=True):
        np.testing.assert_array_equal(one, other)


def test_augmenter_keeps_shape_and_range_but_changes_pixels() -> None:
    images, labels = _toy_data(8, 5)
    dataset = make_dataset(images, labels, 8, augmenter=build_augmenter(seed=0))
    augmented, _ = next(iter(dataset))
    assert augmented.shape == (8, 16, 16, 3)
    assert float(tf.reduce_min(augmented)) >= 0.0 and float(tf.reduce_max(augmented)) <= 1.0
    assert not np.allclose(augmented.numpy(), images / 255.0, atol=1e-3)


def test_bad_loop_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        fit_classifier(
            _build, FitSetup(_toy_data(6, 0), _toy_data(6, 1), tmp_path), LoopConfig(epochs=0)
        )


@pytest.mark.slow
def test_loop_runs_on_two_replicas_with_mirrored_strategy(tmp_path: Path) -> None:
    """Two logical CPUs stand in for two GPUs; TF must be configured before first use,
    so this runs in a fresh interpreter."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        from tests.training.signs.test_custom_loop import _build, _toy_data
        from training.signs.custom_loop import FitSetup, LoopConfig, fit_classifier
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        config = LoopConfig(epochs=2, batch_size=8, augment=True)
        setup = FitSetup(_toy_data(40, 0), _toy_data(12, 1), Path({str(tmp_path)!r}), strategy)
        _, result = fit_classifier(_build, setup, config)
        print("replicas", strategy.num_replicas_in_sync, "epochs", result.epochs_run)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "replicas 2 epochs 2" in completed.stdout


@pytest.mark.parametrize(
    ("task_type", "task_id", "chief"),
    [("worker", 0, True), ("worker", 1, False), (None, None, True)],
)
def test_only_the_chief_writes_into_the_real_folders(
    task_type: str | None, task_id: int | None, chief: bool
) -> None:
    cluster = tf.train.ClusterSpec({"worker": ["host-a:2222", "host-b:2222"]})
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        cluster, task_type=task_type, task_id=task_id
    )
    strategy = SimpleNamespace(cluster_resolver=resolver)
    assert is_chief(strategy) is chief
    folder = worker_folder(strategy, Path("models"))
    assert (folder == Path("models")) is chief


def test_classifier_batches_are_shuffled_before_batching_and_prefetched_last() -> None:
    images, labels = _toy_data(8, 6)
    dataset = make_dataset(images, labels, 4, shuffle_seed=0, augmenter=build_augmenter(seed=0))
    steps = dataset_steps(dataset)
    assert steps.index("ShuffleDatasetV3") < steps.index("BatchDatasetV2")
    assert steps[-1] == "PrefetchDataset"


def test_class_weights_scale_each_examples_loss() -> None:
    model = tf.keras.Sequential([tf.keras.Input((2, 2, 3)), tf.keras.layers.Flatten()])
    model.add(tf.keras.layers.Dense(2, kernel_initializer="zeros"))  # logits 0: loss ln 2
    optimizer = tf.keras.optimizers.Adam()
    strategy = tf.distribute.get_strategy()
    labels = np.array([0, 1, 1])
    dataset = make_dataset(np.zeros((3, 2, 2, 3), np.uint8), labels, 3)
    batch = next(iter(dataset))
    spec = dataset.element_spec
    _, plain = make_steps(model, optimizer, strategy, spec)
    _, weighted = make_steps(model, optimizer, strategy, spec, np.array([1.0, 3.0]))
    assert plain(batch).numpy()[0] == pytest.approx(3 * np.log(2), rel=1e-5)
    assert weighted(batch).numpy()[0] == pytest.approx((1 + 3 + 3) * np.log(2), rel=1e-5)
