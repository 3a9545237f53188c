"""Ray Serve: a local Ray cluster (started here, ``ray.init``) runs an HTTP proxy actor and
the deployment's replica actors; ``@serve.batch`` batches inside each replica.

``--parallel`` is the number of replicas (one CPU each in Ray's accounting). Each replica
takes up to 64 requests at once (``max_ongoing_requests``; Ray's default of 5 would cap
every batch at 5). Clients send the JPEG as the raw request body.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import ray
from ray import serve
from starlette.requests import Request

from benchmarks.peers.servers.signs import (
    MAX_BATCH,
    MAX_WAIT_S,
    SignsClassifier,
    answer,
    arguments,
)

MAX_ONGOING = 64  # above wrk's 32 connections


class Signs:
    def __init__(self, models: str) -> None:
        self.classifier = SignsClassifier(Path(models))

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=MAX_WAIT_S)
    async def classify(self, files: list[bytes]) -> list[dict[str, object]]:
        return [answer(row) for row in self.classifier.probabilities(files)]

    async def __call__(self, request: Request) -> dict[str, object]:
        return await self.classify(await request.body())


# A call rather than a class decorator, which type checkers cannot see replace the class; the
# deployment is named after the class either way.
SIGNS = serve.deployment(max_ongoing_requests=MAX_ONGOING, ray_actor_options={"num_cpus": 1})(Signs)


def main() -> None:
    options = arguments(__doc__ or "", "replicas")
    # SIGTERM (how the benchmark stops a server) exits through atexit, where Ray stops the
    # processes it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ray.init(num_cpus=max(options.parallel, os.cpu_count() or 1), include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": options.port})
    application = SIGNS.options(num_replicas=options.parallel).bind(str(options.models.resolve()))
    serve.run(application, route_prefix="/classify")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
