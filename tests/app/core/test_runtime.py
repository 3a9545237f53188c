"""Device selection: the GPU when TensorFlow sees one, unless DEVICE=cpu."""

from __future__ import annotations

import logging

import pytest
import tensorflow as tf

from app.core.runtime import select_device

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


def test_cpu_is_forced_by_the_setting() -> None:
    assert select_device("cpu") == "/CPU:0"


def test_auto_follows_what_tensorflow_sees() -> None:
    assert select_device("auto") == ("/GPU:0" if HAS_GPU else "/CPU:0")


@pytest.mark.skipif(HAS_GPU, reason="needs a machine without a GPU")
def test_asking_for_a_missing_gpu_falls_back_to_cpu_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert select_device("gpu") == "/CPU:0"
    assert "no GPU" in caplog.text
