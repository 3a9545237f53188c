"""The functional autoencoder: shapes, shared weights, learning, and SavedModel export."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.malaria.autoencoder import build_autoencoder, symmetry_averaged_codes
from training.malaria.signatures import save_autoencoder
from training.malaria.train import bottleneck_summary

SIZE = 16


@pytest.fixture
def parts():
    keras.utils.set_random_seed(0)
    return build_autoencoder(SIZE, filters=(8, 8), code_channels=4)


def _cells(count: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (count, SIZE, SIZE, 3)).astype(np.float32)


def test_shapes(parts) -> None:
    cells = _cells()
    code = parts.encoder(cells)
    assert code.shape == (4, SIZE // 4, SIZE // 4, 4)
    assert parts.decoder(code).shape == cells.shape
    assert parts.autoencoder(cells).shape == cells.shape
    assert parts.embedder(cells).shape == (4, parts.code_dim)


def test_models_share_one_set_of_weights(parts) -> None:
    assert {id(v) for v in parts.autoencoder.weights} == {
        id(v) for v in parts.encoder.weights + parts.decoder.weights
    }
    trunk = {
        id(layer.kernel) for layer in parts.encoder.layers if layer.name.startswith("enc_conv")
    }
    assert trunk <= {id(v) for v in parts.embedder.weights}
    cells = _cells()
    before = parts.autoencoder(cells).numpy()
    kernel = parts.encoder.get_layer("enc_conv0").kernel
    kernel.assign(kernel * 2.0)
    assert not np.allclose(parts.autoencoder(cells).numpy(), before)


def test_one_training_step_lowers_the_loss(parts) -> None:
    parts.autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_squared_error")
    cells = _cells(8)
    before = parts.autoencoder.evaluate(cells, cells, verbose=0)
    parts.autoencoder.train_on_batch(cells, cells)
    assert parts.autoencoder.evaluate(cells, cells, verbose=0) < before


def test_image_size_must_survive_the_pooling() -> None:
    with pytest.raises(ValueError, match="divisible"):
        build_autoencoder(18, filters=(8, 8))


def test_exported_signatures_reload_with_identical_outputs(parts, tmp_path: Path) -> None:
    save_autoencoder(parts, SIZE, tmp_path / "model")
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    cells = tf.constant(_cells(3))
    denoised = loaded.signatures["denoise"](images=cells)["images"]
    np.testing.assert_allclose(denoised, parts.autoencoder(cells), atol=1e-6)
    default = loaded.signatures["serving_default"](images=cells)["images"]
    np.testing.assert_allclose(default, denoised, atol=1e-6)
    codes = loaded.signatures["encode"](images=cells)["codes"]
    assert codes.shape == (3, parts.code_dim)
    np.testing.assert_allclose(codes, symmetry_averaged_codes(parts.embedder, cells), atol=1e-6)
    spec = loaded.signatures["encode"].structured_input_signature[1]["images"]
    assert spec.shape.as_list() == [None, SIZE, SIZE, 3] and spec.dtype == tf.float32


def test_symmetry_averaged_codes_ignore_rotation_and_flips(parts) -> None:
    cells = tf.constant(_cells(3))
    codes = symmetry_averaged_codes(parts.embedder, cells).numpy()
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, rtol=1e-5)
    for moved in (tf.image.rot90(cells, 1), tf.image.flip_left_right(cells)):
        np.testing.assert_allclose(symmetry_averaged_codes(parts.embedder, moved), codes, atol=1e-5)
    plain = tf.math.l2_normalize(parts.embedder(cells), axis=-1).numpy()
    assert not np.allclose(codes, plain, atol=1e-3)  # the views really were averaged


def test_the_bottleneck_is_smaller_than_the_input_and_exported(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    parts = build_autoencoder(SIZE, filters=(8, 8), code_channels=2, retrieval_dim=6)
    assert parts.bottleneck_shape == (SIZE // 4, SIZE // 4, 2)
    assert parts.code_dim == 6
    summary = bottleneck_summary(parts)
    assert summary.model_dump() == {
        "shape": [4, 4, 2],
        "values": 32,
        "input_values": SIZE * SIZE * 3,
        "compression": 24.0,
    }
    save_autoencoder(parts, SIZE, tmp_path / "model")
    bottleneck = tf.saved_model.load(str(tmp_path / "model")).signatures["bottleneck"]
    cells = tf.constant(_cells(3))
    codes = bottleneck(images=cells)["codes"]
    np.testing.assert_allclose(codes, tf.reshape(parts.encoder(cells), [3, -1]), atol=1e-6)
