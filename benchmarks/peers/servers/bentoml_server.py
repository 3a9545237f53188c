"""BentoML: a service class whose batchable API the adaptive batcher feeds; ``bentoml serve``
runs it in worker processes behind one listening socket.

``--parallel`` is the number of worker processes (``@bentoml.service(workers=...)``); each
batches on its own, at most 32 images, the wait chosen by BentoML's adaptive dispatcher
(there is no fixed window to set; ``max_latency_ms`` is only the ceiling above which it
refuses work, set high so that no request is refused). Clients upload the image as the
multipart field ``images``, which BentoML opens with Pillow (the API takes a list of
images: BentoML's batchable form).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bentoml
from PIL import Image

from benchmarks.peers.servers.signs import MAX_BATCH, SignsClassifier, answer, arguments

MODELS_ENV, WORKERS_ENV = "PEER_MODELS", "PEER_WORKERS"


@bentoml.service(workers=int(os.environ.get(WORKERS_ENV, "1")), traffic={"timeout": 60})
class Signs:
    def __init__(self) -> None:
        self.classifier = SignsClassifier(Path(os.environ[MODELS_ENV]))

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=60_000)
    def classify(self, images: list[Image.Image]) -> list[dict[str, object]]:
        probabilities = self.classifier.probabilities_of(images)
        return [answer(row) for row in probabilities]


def main() -> None:
    options = arguments(__doc__ or "", "worker processes")
    os.environ[MODELS_ENV] = str(options.models.resolve())
    os.environ[WORKERS_ENV] = str(options.parallel)
    command = [sys.executable, "-m", "bentoml", "serve", f"{__spec__.name}:Signs"]
    command += ["--host", "127.0.0.1", "--port", str(options.port)]
    os.execv(sys.executable, command)  # same process id: its CPU is measured from it


if __name__ == "__main__":
    main()
