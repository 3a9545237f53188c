"""The tf.data pipeline: preprocessing cached once, fresh noise and flips every epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from training.pipeline import (
    denoising_dataset,
    denoising_example,
    frozen_dataset,
    to_unit_float,
)


def _grey_cells(count: int, size: int = 8) -> np.ndarray:
    """``count`` flat cells of distinct grey levels in 77..178 (no clipping at sigma 0.05)."""
    levels = np.linspace(77, 178, count).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, size, size, 3)).copy()


def _counting(calls: list[int]):
    """``to_unit_float`` that also records each time it really runs inside the pipeline."""

    def record() -> np.int64:
        calls.append(1)
        return np.int64(len(calls))

    def preprocess(image: tf.Tensor) -> tf.Tensor:
        tick = tf.py_function(record, [], tf.int64)
        with tf.control_dependencies([tick]):
            return to_unit_float(image)

    return preprocess


def _by_grey_level(noisy: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(clean.mean(axis=(1, 2, 3)))
    return noisy[order], clean[order]


def test_preprocessing_runs_once_however_many_epochs() -> None:
    calls: list[int] = []
    cells = _grey_cells(6)
    dataset = denoising_dataset(
        cells, batch_size=6, noise_sigma=0.05, seed=0, preprocess=_counting(calls)
    )
    epochs = list(dataset.take(4))
    assert len(epochs) == 4
    assert len(calls) == len(cells)


def test_every_epoch_gets_fresh_noise_on_the_same_clean_cells() -> None:
    cells = _grey_cells(8)
    dataset = denoising_dataset(cells, batch_size=8, noise_sigma=0.05, seed=0)
    (noisy_1, clean_1), (noisy_2, clean_2) = (
        _by_grey_level(noisy.numpy(), clean.numpy()) for noisy, clean in dataset.take(2)
    )
    np.testing.assert_allclose(clean_1, clean_2)
    np.testing.assert_allclose(clean_1, cells / 255.0, atol=1e-6)
    noise_1, noise_2 = noisy_1 - clean_1, noisy_2 - clean_2
    assert noise_1.std() == pytest.approx(0.05, rel=0.15)
    assert noise_2.std() == pytest.approx(0.05, rel=0.15)
    assert np.abs(noise_1 - noise_2).mean() > 0.02


def test_noisy_inputs_stay_in_unit_range() -> None:
    extremes = np.stack([np.zeros((8, 8, 3)), np.full((8, 8, 3), 255)]).astype(np.uint8)
    noisy, _ = next(iter(denoising_dataset(extremes, batch_size=2, noise_sigma=0.5, seed=0)))
    assert noisy.dtype == tf.float32
    assert float(tf.reduce_min(noisy)) >= 0.0 and float(tf.reduce_max(noisy)) <= 1.0


def test_augmentation_only_flips_and_rotates() -> None:
    cell = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(1, 4, 4, 3)
    dataset = denoising_dataset(cell, batch_size=1, noise_sigma=0.0, seed=0)
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


def test_file_cache_is_written_at_the_given_path(tmp_path: Path) -> None:
    prefix = tmp_path / "cells"
    dataset = denoising_dataset(
        _grey_cells(4), batch_size=4, noise_sigma=0.1, seed=0, cache=str(prefix)
    )
    list(dataset.take(2))
    assert any(path.name.startswith("cells") for path in tmp_path.iterdir())


def test_frozen_validation_noise_is_the_same_every_pass() -> None:
    dataset = frozen_dataset(
        _grey_cells(5), batch_size=2, make_example=denoising_example((0.05, 0.2))
    )
    first = np.concatenate([noisy.numpy() for noisy, _ in dataset])
    second = np.concatenate([noisy.numpy() for noisy, _ in dataset])
    np.testing.assert_array_equal(first, second)
    assert len(first) == 5


def test_noise_levels_are_drawn_per_image_from_the_range() -> None:
    cells = _grey_cells(64)
    noisy, clean = next(
        iter(denoising_dataset(cells, batch_size=64, noise_sigma=(0.0, 0.1), seed=0))
    )
    levels = np.std(noisy.numpy() - clean.numpy(), axis=(1, 2, 3))
    assert levels.min() < 0.02 and levels.max() > 0.08


@pytest.mark.parametrize(("sigma", "batch_size"), [(-0.1, 4), ((0.2, 0.1), 4), (0.1, 0)])
def test_bad_settings_are_refused(sigma: float | tuple[float, float], batch_size: int) -> None:
    with pytest.raises(ValueError):
        denoising_dataset(_grey_cells(4), batch_size=batch_size, noise_sigma=sigma, seed=0)
