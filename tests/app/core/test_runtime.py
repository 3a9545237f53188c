"""Device selection, metadata bounds and the ops a serving signature may use."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import tensorflow as tf

from app.core.errors import InvalidModelError
from app.core.runtime import forbidden_ops, read_metadata, select_device
from contract.metadata import MAX_METADATA_BYTES
from tests.app.helpers import python_output

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


def test_oversized_metadata_is_refused_without_parsing(tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text(json.dumps({"pad": "x" * MAX_METADATA_BYTES}))
    with pytest.raises(InvalidModelError, match="larger than"):
        read_metadata(tmp_path)


def test_signatures_that_touch_files_are_named_and_plain_maths_is_not(tmp_path: Path) -> None:
    path = str(tmp_path / "f.txt")

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def touches_files(images: tf.Tensor) -> tf.Tensor:
        tf.io.write_file(path, "x")
        return images * tf.cast(tf.strings.length(tf.io.read_file(path)), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def maths(images: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(tf.cond(tf.reduce_sum(images) > 0, lambda: images, lambda: -images))

    assert forbidden_ops(touches_files.get_concrete_function()) == ["ReadFile", "WriteFile"]
    assert forbidden_ops(maths.get_concrete_function()) == []


def test_a_fresh_worker_sizes_tensorflows_thread_pools(quick_models: Path) -> None:
    """MODEL_THREADS reaches TensorFlow in a process whose runtime has not started yet, as
    in each ``python -m app`` worker (this test process's runtime runs already)."""
    script = (
        "import tensorflow as tf\n"
        "from fastapi.testclient import TestClient\n"
        "from app.main import create_app\n"
        "from app.settings import Settings\n"
        f"settings = Settings(model_dir={str(quick_models)!r}, model_threads=1, "
        "reload_interval_s=0, device='cpu')\n"
        "with TestClient(create_app(settings)) as client:\n"
        "    assert client.get('/readyz').status_code == 200\n"
        "    threading = tf.config.threading\n"
        "    print(threading.get_intra_op_parallelism_threads(),"
        " threading.get_inter_op_parallelism_threads())\n"
    )
    assert python_output(script).split()[-2:] == ["1", "1"]
