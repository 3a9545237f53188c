"""A stand-in SIGNS classifier that costs almost nothing to run: the serving path on its own.

Served instead of the real network, ``/classify`` still decodes every upload, goes through
the micro-batcher, calls a SavedModel signature and answers the same JSON; only the network
is replaced by global average pooling and one Dense layer. So ``/noop`` vs ``/classify`` with
this model is what the serving path costs, and the rest of the gap to the real model is the
network's own compute.

Run as ``python -m benchmarks.stub_model MODELS TARGET`` so that TensorFlow is never imported
into the benchmark's own process while servers are being measured.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import REPO_ROOT
from contract.layout import METADATA_FILE
from contract.metadata import ClassifierMetadata, read_metadata, to_json


def stub_models_folder(models: Path, target: Path) -> Path:
    """``write_stub_models`` in a child process; returns ``target``."""
    command = [sys.executable, "-m", "benchmarks.stub_model", str(models), str(target)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"writing the stub classifier failed:\n{done.stderr[-2000:]}")
    return target


def write_stub_models(models: Path, target: Path) -> Path:
    """A models folder like ``models`` whose newest classifier version is the stub (same
    name, version, input and class names); the other models are linked, not copied."""
    import tensorflow as tf  # here, not above: only the child process needs TensorFlow

    from benchmarks.model_bench import CLASSIFIER, newest_version
    from training.signs.signatures import save_classifier

    real = newest_version(models, CLASSIFIER)
    metadata = read_metadata(real)
    if not isinstance(metadata, ClassifierMetadata):
        raise ValueError(f"{real}: not a classifier version")
    size = metadata.input.height
    if metadata.input.width != size:
        raise ValueError(f"{real}: the stub supports square inputs only")
    stub = tf.keras.Sequential(
        [
            tf.keras.Input((size, size, 3)),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(len(metadata.class_names)),
        ]
    )
    folder = target / CLASSIFIER / real.name
    save_classifier(stub, size, folder)
    stub_metadata = metadata.model_copy(
        update={
            "stub": "global average pooling + Dense, a near-zero-cost benchmark stand-in",
            "ood": None,  # the real network's out-of-distribution score
            "calibration": None,  # and its temperature
        }
    )
    (folder / METADATA_FILE).write_text(to_json(stub_metadata))
    for other in models.iterdir():
        if other.is_dir() and other.name != CLASSIFIER and not other.name.startswith("."):
            (target / other.name).symlink_to(other.resolve(), target_is_directory=True)
    return target


if __name__ == "__main__":
    write_stub_models(Path(sys.argv[1]), Path(sys.argv[2]))
