"""NVIDIA Triton Inference Server through PyTriton: the model is a Python callable that Triton
feeds through its dynamic batcher; clients speak the Open Inference Protocol (KServe v2).

``--parallel`` is the number of model instances (Triton runs one batch per instance at a
time; the instances share one loaded SavedModel). gRPC and metrics are off: only HTTP is
measured.
"""

from __future__ import annotations

import os
import sysconfig

import numpy as np

from benchmarks.peers.servers.signs import MAX_BATCH, MAX_WAIT_S, SignsClassifier, arguments

# Triton's Python backend stub links against libpython; a venv made from a non-system
# interpreter (pyenv) has it only in the interpreter's own lib folder.
_LIBDIR = sysconfig.get_config_var("LIBDIR")
os.environ["LD_LIBRARY_PATH"] = ":".join(
    part for part in (_LIBDIR, os.environ.get("LD_LIBRARY_PATH")) if part
)

from pytriton.decorators import batch  # noqa: E402 (after the library path)
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig  # noqa: E402


def main() -> None:
    options = arguments(__doc__ or "", "model instances")
    classifier = SignsClassifier(options.models)

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        return {"probabilities": classifier.probabilities([bytes(row[0]) for row in image])}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=options.port,
        allow_grpc=False,
        allow_metrics=False,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="signs_classifier",
            infer_func=[infer] * options.parallel,
            inputs=[Tensor(name="image", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(classifier.classes,))],
            config=ModelConfig(
                max_batch_size=MAX_BATCH,
                batcher=DynamicBatcher(max_queue_delay_microseconds=int(MAX_WAIT_S * 1e6)),
            ),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
