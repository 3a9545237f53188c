"""The servers compared: how each is installed, started, configured and called.

Every peer serves the same SavedModel through ``servers.signs`` with its own dynamic batcher
(at most 32 images, about 2 ms of waiting where the framework takes a window) and its own
fairest use of several cores (``parallel``: processes, instances or replicas); cellsign is
the project's own ``python -m app``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.peers.requests import (
    PeerRequest,
    base64_json_request,
    cellsign_probabilities,
    json_probabilities,
    multipart_request,
    raw_request,
    v2_request,
)
from benchmarks.peers.venvs import COMMON_REQUIREMENTS

CELLSIGN = "cellsign"
V2_PATH = "/v2/models/signs_classifier/infer"


@dataclass(frozen=True)
class Peer:
    name: str  # on the command line and the venv's folder
    title: str
    package: str  # whose version the table shows
    requirements: tuple[str, ...]
    module: str  # run with ``python -m`` in the peer's venv; empty for cellsign
    parallel_unit: str  # what ``parallel`` counts
    batching: str
    requests: Callable[[bytes], list[PeerRequest]]
    cleanup: tuple[str, ...] = ()  # ``python ARGS`` in the venv after the server stops

    def settings(self, parallel: int) -> str:
        return f"{parallel} {self.parallel_unit}; {self.batching}"


@dataclass(frozen=True)
class Config:
    peer: Peer
    parallel: int

    @property
    def label(self) -> str:
        return f"{self.peer.name}-{self.parallel}"


def _cellsign_requests(image: bytes) -> list[PeerRequest]:
    return [
        multipart_request(image, "/classify", "file", cellsign_probabilities),
        raw_request(image, "/classify", cellsign_probabilities),
        v2_request(image, V2_PATH),
    ]


PEERS = {
    peer.name: peer
    for peer in (
        Peer(
            CELLSIGN,
            "cellsign",
            "cellsign",
            (),
            "",
            "worker process(es) (WORKERS)",
            "own micro-batcher, defaults (max 32 images)",
            _cellsign_requests,
        ),
        Peer(
            "pytriton",
            "Triton (PyTriton)",
            "nvidia-pytriton",
            ("nvidia-pytriton==0.7.0", "numpy<2", *COMMON_REQUIREMENTS),
            "benchmarks.peers.servers.pytriton_server",
            "model instance(s), one Python process",
            "dynamic batching max 32, 2 ms queue delay; HTTP only",
            lambda image: [v2_request(image, V2_PATH)],
        ),
        Peer(
            "litserve",
            "LitServe",
            "litserve",
            ("litserve==0.2.19", *COMMON_REQUIREMENTS),
            "benchmarks.peers.servers.litserve_server",
            "inference worker process(es) + 1 API server process",
            "batch max 32, 2 ms timeout; ZeroMQ queue (fast_queue)",
            lambda image: [base64_json_request(image, "/predict", json_probabilities)],
        ),
        Peer(
            "bentoml",
            "BentoML",
            "bentoml",
            ("bentoml==1.4.40", *COMMON_REQUIREMENTS),
            "benchmarks.peers.servers.bentoml_server",
            "worker process(es)",
            "adaptive batching max 32 (max_latency_ms 60000)",
            lambda image: [multipart_request(image, "/classify", "images", json_probabilities)],
        ),
        Peer(
            "ray",
            "Ray Serve",
            "ray",
            ("ray[serve]==2.60.0", *COMMON_REQUIREMENTS),
            "benchmarks.peers.servers.ray_server",
            "replica(s) + HTTP proxy actor",
            "serve.batch max 32, 2 ms wait; max_ongoing_requests 64",
            lambda image: [raw_request(image, "/classify", json_probabilities)],
            cleanup=("-m", "ray.scripts.scripts", "stop", "--force"),
        ),
    )
}
