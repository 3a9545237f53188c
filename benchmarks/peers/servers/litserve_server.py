"""LitServe: an API-server process (FastAPI, uvicorn) hands requests over a queue to
separate inference worker processes, each with its own batcher.

``--parallel`` is the number of inference worker processes (``workers_per_device`` on the
CPU); one API server process; ZeroMQ between them (``fast_queue``, LitServe's advice above
about 100 requests/s). Clients send JSON ``{"image": "<base64 JPEG>"}``, the form of
LitServe's image examples: a multipart upload would reach the workers as a form whose file
cannot cross the process boundary (LitServe 0.2.19 fails to pickle it).
"""

from __future__ import annotations

import base64
from pathlib import Path

import litserve as ls
import numpy as np

from benchmarks.peers.servers.signs import (
    MAX_BATCH,
    MAX_WAIT_S,
    SignsClassifier,
    answer,
    arguments,
)


class SignsAPI(ls.LitAPI):
    def __init__(self, models: Path) -> None:
        super().__init__(max_batch_size=MAX_BATCH, batch_timeout=MAX_WAIT_S)
        self.models = models

    def setup(self, device: str) -> None:
        self.classifier = SignsClassifier(self.models)

    def decode_request(self, request: dict[str, str]) -> bytes:
        return base64.b64decode(request["image"])

    def batch(self, inputs: list[bytes]) -> list[bytes]:
        return inputs  # decoded together in predict, like the other peers

    def predict(self, images: list[bytes]) -> np.ndarray:
        return self.classifier.probabilities(images)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict[str, object]:
        return answer(output)


def main() -> None:
    options = arguments(__doc__ or "", "inference worker processes")
    server = ls.LitServer(
        SignsAPI(options.models),
        accelerator="cpu",
        workers_per_device=options.parallel,
        fast_queue=True,
    )
    server.run(
        host="127.0.0.1",
        port=options.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
