"""The tf.data pipeline in the lab's order: preprocessing cached once, a new order every
epoch (shuffle before repeat), full batches across epochs (repeat before batch), fresh noise
and flips every epoch, prefetch last."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.training.dataset_graph import dataset_steps
from training import pipeline
from training.pipeline import (
    MakeExample,
    add_gaussian_noise,
    frozen_dataset,
    noise_range,
    random_flips_and_rotations,
    sigma_per_image,
    to_unit_float,
    training_dataset,
)


def _grey_cells(count: int, size: int = 8) -> np.ndarray:
    """``count`` flat cells of distinct grey levels in 77..178 (no clipping at sigma 0.05)."""
    levels = np.linspace(77, 178, count).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, size, size, 3)).copy()


def _numbered_cells(count: int) -> np.ndarray:
    """1x1 cells whose pixel value is their index, so a batch shows which cells it holds."""
    return np.arange(count, dtype=np.uint8).reshape(count, 1, 1, 1)


def _noisy_pairs(sigma: float | tuple[float, float], augment: bool = True) -> MakeExample:
    """Clean batch -> (flipped/rotated + noise per image, clean): the denoising half of the
    autoencoder's training example, built from the pipeline's own steps."""
    sigma_range = noise_range(sigma)

    def example(clean: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if augment:
            clean = random_flips_and_rotations(clean)
        return add_gaussian_noise(clean, sigma_per_image(clean, sigma_range)), clean

    return example


def _unchanged(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return batch, batch


def _epochs_of_indices(count: int, batch_size: int, batches: int) -> list[int]:
    dataset = training_dataset(
        _numbered_cells(count), batch_size=batch_size, seed=0, make_example=_unchanged
    )
    flat = [np.rint(x.numpy().ravel() * 255).astype(int) for x, _ in dataset.take(batches)]
    return np.concatenate(flat).tolist()


def test_steps_run_in_the_labs_order() -> None:
    dataset = training_dataset(_grey_cells(4), batch_size=2, seed=0, make_example=_unchanged)
    assert dataset_steps(dataset) == [
        "TensorSliceDataset",
        "ParallelMapDatasetV2",  # uint8 -> float, once
        "CacheDatasetV2",
        "ShuffleDatasetV3",
        "RepeatDataset",
        "BatchDatasetV2",
        "MapDataset",  # make_example: fresh randomness every epoch, drawn in batch order
        "PrefetchDataset",
    ]


def test_every_epoch_holds_every_cell_once_in_a_new_order() -> None:
    count = 12
    seen = _epochs_of_indices(count, batch_size=4, batches=9)  # three epochs
    epochs = [seen[start : start + count] for start in range(0, 3 * count, count)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(count))
    assert len({tuple(epoch) for epoch in epochs}) == 3


def test_batches_stay_full_and_run_on_across_the_epoch_boundary() -> None:
    """10 cells in batches of 4: batch 3 ends epoch 1 (2 cells) and starts epoch 2 (2 cells);
    no short batch, so ``fit`` with ``steps_per_epoch`` sees one shape."""
    dataset = training_dataset(_numbered_cells(10), batch_size=4, seed=0, make_example=_unchanged)
    assert dataset.element_spec[0].shape[0] == 4  # a static batch size: no remainder batches
    seen = _epochs_of_indices(10, batch_size=4, batches=5)
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))


def test_preprocessing_runs_once_however_many_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def record() -> np.int64:
        calls.append(1)
        return np.int64(len(calls))

    def counting_to_unit_float(image: tf.Tensor) -> tf.Tensor:
        tick = tf.py_function(record, [], tf.int64)
        with tf.control_dependencies([tick]):
            return to_unit_float(image)

    monkeypatch.setattr(pipeline, "to_unit_float", counting_to_unit_float)
    cells = _grey_cells(6)
    dataset = training_dataset(cells, batch_size=6, seed=0, make_example=_noisy_pairs(0.05))
    assert len(list(dataset.take(4))) == 4
    assert len(calls) == len(cells)


def _by_grey_level(noisy: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(clean.mean(axis=(1, 2, 3)))
    return noisy[order], clean[order]


def test_every_epoch_gets_fresh_noise_on_the_same_clean_cells() -> None:
    cells = _grey_cells(8)
    dataset = training_dataset(cells, batch_size=8, seed=0, make_example=_noisy_pairs(0.05))
    (noisy_1, clean_1), (noisy_2, clean_2) = (
        _by_grey_level(noisy.numpy(), clean.numpy()) for noisy, clean in dataset.take(2)
    )
    np.testing.assert_allclose(clean_1, clean_2)
    np.testing.assert_allclose(clean_1, cells / 255.0, atol=1e-6)
    noise_1, noise_2 = noisy_1 - clean_1, noisy_2 - clean_2
    assert noise_1.std() == pytest.approx(0.05, rel=0.15)
    assert noise_2.std() == pytest.approx(0.05, rel=0.15)
    assert np.abs(noise_1 - noise_2).mean() > 0.02


def test_one_seed_gives_the_same_examples_whatever_the_thread_timing() -> None:
    def examples() -> list[np.ndarray]:
        tf.keras.utils.set_random_seed(4)
        dataset = training_dataset(
            _grey_cells(64), batch_size=4, seed=4, make_example=_noisy_pairs((0.0, 0.2))
        )
        return [noisy.numpy() for noisy, _ in dataset.take(40)]

    first, second = examples(), examples()
    for one, other in zip(first, second, strict=True):
        np.testing.assert_array_equal(one, other)


def test_noisy_inputs_stay_in_unit_range() -> None:
    extremes = np.stack([np.zeros((8, 8, 3)), np.full((8, 8, 3), 255)]).astype(np.uint8)
    dataset = training_dataset(extremes, batch_size=2, seed=0, make_example=_noisy_pairs(0.5))
    noisy, _ = next(iter(dataset))
    assert noisy.dtype == tf.float32
    assert float(tf.reduce_min(noisy)) >= 0.0 and float(tf.reduce_max(noisy)) <= 1.0


def test_augmentation_only_flips_and_rotates() -> None:
    cell = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(1, 4, 4, 3)
    dataset = training_dataset(cell, batch_size=1, seed=0, make_example=_noisy_pairs(0.0))
    square = cell[0] / 255.0
    symmetries = [
        np.rot90(variant, turns) for variant in (square, square[:, ::-1]) for turns in range(4)
    ]
    seen = set()
    for _, clean in dataset.take(40):
        matches = [i for i, s in enumerate(symmetries) if np.allclose(clean[0], s, atol=1e-6)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 4


def test_frozen_validation_noise_is_the_same_every_pass() -> None:
    dataset = frozen_dataset(_grey_cells(5), batch_size=2, make_example=_noisy_pairs((0.05, 0.2)))
    first = np.concatenate([noisy.numpy() for noisy, _ in dataset])
    second = np.concatenate([noisy.numpy() for noisy, _ in dataset])
    np.testing.assert_array_equal(first, second)
    assert len(first) == 5


def test_noise_levels_are_drawn_per_image_from_the_range() -> None:
    dataset = training_dataset(
        _grey_cells(64), batch_size=64, seed=0, make_example=_noisy_pairs((0.0, 0.1))
    )
    noisy, clean = next(iter(dataset))
    levels = np.std(noisy.numpy() - clean.numpy(), axis=(1, 2, 3))
    assert levels.min() < 0.02 and levels.max() > 0.08


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        training_dataset(_grey_cells(4), batch_size=0, seed=0, make_example=_unchanged)


def test_a_negative_noise_level_is_refused() -> None:  # an unordered range: test_contrastive
    with pytest.raises(ValueError, match="noise sigma"):
        noise_range(-0.1)
