"""Which dtype policy training runs under, and that it is put back afterwards."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from training import distribute


def test_a_requested_policy_wins() -> None:
    assert distribute.training_policy("float32") == "float32"
    assert distribute.training_policy("mixed_bfloat16") == "mixed_bfloat16"


@pytest.mark.parametrize(("native", "expected"), [(True, "mixed_bfloat16"), (False, "float32")])
def test_on_cpu_bfloat16_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(distribute, "cpu_has_bfloat16", lambda: native)
    assert distribute.training_policy() == expected


def test_a_gpu_trains_in_float16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu:0"])
    assert distribute.training_policy() == "mixed_float16"


def test_the_previous_policy_comes_back_even_after_an_error() -> None:
    before = keras.mixed_precision.global_policy().name
    with pytest.raises(RuntimeError), distribute.training_precision("mixed_bfloat16") as policy:
        assert policy == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        raise RuntimeError("training failed")
    assert keras.mixed_precision.global_policy().name == before
