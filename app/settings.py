"""Every serving setting, read once from the environment (or a ``.env`` file)."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Each worker holds its own TensorFlow runtime and models; past this many the memory grows
# while one machine's other limits (memory bandwidth, the batcher's fill) cap the gain.
MAX_DEFAULT_WORKERS = 8
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max ..."
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")  # cgroup v1: cpu.cfs_quota_us (-1: none), _period_us


def cpu_quota(cpu_max: Path | None = None, v1_cpu: Path | None = None) -> float | None:
    """This cgroup's CPU quota in CPUs (``docker run --cpus``, a Kubernetes CPU limit), or
    None when it has none or the files are not there."""
    try:
        quota, period = (cpu_max or CGROUP_CPU_MAX).read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        v1 = v1_cpu or CGROUP_V1_CPU
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        return None if quota_us < 0 else quota_us / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask (a container's cpuset counts), and
    no more than its cgroup's CPU quota, rounded up."""
    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota()
    return cpus if quota is None else min(cpus, max(1, math.ceil(quota)))


def default_workers() -> int:
    """One worker per usable CPU, at most ``MAX_DEFAULT_WORKERS``: under load a worker keeps
    about one core busy (its event loop and its interpreter lock; docs/workers.md)."""
    return min(usable_cpus(), MAX_DEFAULT_WORKERS)


class Settings(BaseSettings):
    """Environment variables are the field names in upper case, e.g. ``MODEL_DIR``."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    model_dir: Path = Field(Path("models"), description="Folder holding the versioned models.")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto uses a GPU when TensorFlow sees one."
    )
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Per uploaded file.")
    max_image_pixels: int = Field(
        16_000_000,
        gt=0,
        description=(
            "Width x height above which any upload is refused. A baseline JPEG is decoded at "
            "1/8 scale for these small models, so 16 MP phone photos pass cheaply."
        ),
    )
    max_full_decode_pixels: int = Field(
        4_000_000,
        gt=0,
        description=(
            "Width x height above which an image decoded at full size is refused: PNG, GIF, "
            "WebP, BMP, TIFF and progressive JPEG (about 0.1 s of CPU at this size)."
        ),
    )
    max_request_pixels: int = Field(
        16_000_000,
        gt=0,
        description=(
            "Decoding work of one request, summed over its files from their headers before "
            "any is decoded: a JPEG decoded at reduced scale counts its width x height, any "
            "other image four times that (one 16 MP phone photo or one 4 MP PNG, ~0.15 s)."
        ),
    )
    max_jpeg_scans: int = Field(
        32,
        gt=0,
        description=(
            "Scans above which a JPEG is refused: each is decoded over the whole image, and "
            "common encoders write at most 10."
        ),
    )
    denoise_max_side: int = Field(
        1024,
        gt=0,
        description=(
            "Longest side of a /denoise?size=original result; larger uploads are answered "
            "at their aspect ratio scaled to fit (the model sees 48 px anyway)."
        ),
    )
    max_files_per_request: int = Field(64, gt=0, description="`file` parts per /classify request.")
    max_request_bytes: int = Field(
        20 * 1024 * 1024,
        gt=0,
        description=(
            "Bytes of all the images of one /classify or v2 infer request together (the "
            "multipart overhead aside). Taking in 640 MB cost ~1 s of CPU, and MAX_REQUEST_PIXELS "
            "lets one request decode only one large photo anyway."
        ),
    )
    body_read_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may go without data before the request gets 408.",
    )
    max_k: int = Field(100, gt=0, description="Upper bound of k on /similar.")
    default_k: int = Field(5, gt=0, description="k on /similar when the request names none.")
    gallery_dir: Path = Field(
        Path("gallery"),
        description="Folder of the embedded gallery store (SQLite; docs/gallery.md), created "
        "when missing. Never inside MODEL_DIR, which the server only reads.",
    )
    gallery_url: str | None = Field(
        None,
        description="milvus://HOST:PORT (optionally /PREFIX of its collections): keep the "
        "gallery in that Milvus server instead of GALLERY_DIR, shared by every replica.",
    )
    gallery_max_files: int = Field(
        64, gt=0, description="`file` parts per POST /gallery (one transaction)."
    )
    gallery_page_size: int = Field(
        100, gt=0, description="Items per GET /gallery page when the request names no limit."
    )
    gallery_max_page_size: int = Field(
        1000, gt=0, description="Largest `limit` GET /gallery accepts."
    )
    gallery_reencode_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Share of the time the background re-encoding of the gallery (after a new "
        "autoencoder version) takes while its worker serves /similar or gallery additions; "
        "an idle worker re-encodes at full speed.",
    )
    batch_max_size: int = Field(32, gt=0, description="Largest micro-batch sent to a model.")
    batch_max_wait_ms: float = Field(
        2.0, ge=0, description="How long a batch waits for more requests."
    )
    queue_max_images: int | None = Field(
        None,
        gt=0,
        description=(
            "Images that may wait in each micro-batcher (classify, denoise, encode); a request"
            " that does not fit gets 503 with Retry-After at once. Default: INFERENCE_CONCURRENCY"
            " x BATCH_MAX_SIZE, and never below MAX_FILES_PER_REQUEST."
        ),
    )
    inference_concurrency: int | None = Field(
        None,
        gt=0,
        description=(
            "Inference requests (/classify, /denoise, /similar) in progress at once, from their"
            " first byte to their answer; more wait unread for a slot until their deadline,"
            " then get 503 with Retry-After. Default: 2 x BATCH_MAX_SIZE."
        ),
    )
    decode_threads: int = Field(
        8,
        gt=0,
        description=(
            "Worker threads that decode uploads at once. Default: 8, so that a burst of"
            " requests reaches the micro-batcher together and shares one model call; more"
            " threads take the interpreter lock from the event loop (/healthz slows down)."
        ),
    )
    large_decodes: int | None = Field(
        None,
        gt=0,
        description=(
            "Of those, uploads costing over a megapixel decoded at full size (4 MP of a JPEG "
            "at reduced scale) decoded at once (they bound the memory and CPU that large or "
            "hostile images take). Default: the CPUs this process may use."
        ),
    )
    request_timeout_s: float = Field(
        3.0,
        gt=0,
        description=(
            "Seconds an inference request may wait in all (for admission, for a decoding"
            " thread and in its batcher's queue; its upload is not counted) to reach its model;"
            " later it gets 503 with Retry-After. The X-Request-Timeout header may ask for less."
        ),
    )
    reload_interval_s: float = Field(
        10.0, ge=0, description="Seconds between scans for new versions; 0 turns polling off."
    )
    model_versions_kept: int = Field(
        2,
        ge=1,
        description="Newest valid versions of each model kept loaded (clients may pin any of "
        "them); versions named by a label are kept in addition.",
    )
    workers: int = Field(
        default_factory=lambda: default_workers(),
        gt=0,
        description="Worker processes of `python -m app`, each with its own copy of the models; "
        f"default: the CPUs this process may use (affinity and cgroup quota), 1 to "
        f"{MAX_DEFAULT_WORKERS}.",
    )
    model_threads: int | None = Field(
        None,
        gt=0,
        description="Threads of each of TensorFlow's two pools (within one op, across ops) "
        "in every worker. Default: the usable CPUs divided among the workers, at least 1, so "
        "the workers' pools do not outnumber the cores.",
    )
    runtime_dir: Path | None = Field(
        None,
        description="Folder the worker processes of one server share (reload signal); "
        "`python -m app` creates and sets it. Unset: a single process.",
    )
    api_key: str | None = Field(None, description="When set, admin endpoints need X-API-Key.")
    api_key_scope: Literal["admin", "all"] = Field(
        "admin", description="Which endpoints the API key guards."
    )
    reject_ood: bool = Field(
        False,
        description="Answer 422 instead of a flagged result when an input does not look like"
        " the model's training data (out-of-distribution score above its threshold).",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Lowest level logged."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text: readable lines; json: one JSON object per line."
    )
    access_log: bool = Field(
        True,
        description="One log line per request (ID, endpoint, status, timings) from the app; "
        "uvicorn's own access line, which lacks the request ID, is then silenced.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="Base URL of an OTLP/HTTP collector (spans go to {URL}/v1/traces); "
        "unset: no tracing at all.",
    )
    otel_service_name: str = Field("cellsign", description="service.name of exported spans.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins whose browser pages may call the API (comma-separated, or * for "
        "any); empty: CORS off.",
    )

    # `python -m app` (app/server.py): how the HTTP server itself listens and what it tolerates.
    host: str = Field(
        "127.0.0.1", description="Address `python -m app` listens on (0.0.0.0 in the images)."
    )
    port: int = Field(8000, gt=0, lt=65536, description="Port `python -m app` listens on.")
    max_header_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="Largest request line plus headers; a longer (or never finished) head "
        "gets 431 with a JSON detail and the connection is closed.",
    )
    keep_alive_timeout_s: int = Field(
        5, gt=0, description="Seconds an idle keep-alive connection stays open."
    )
    max_concurrency: int = Field(
        1024,
        gt=0,
        description="Open connections plus requests in progress past which the answer is 503 "
        "(health probes pass). Waiting requests cost little: admission and deadlines shed work.",
    )
    graceful_shutdown_s: int = Field(
        30, gt=0, description="On SIGTERM, seconds given to requests in progress before exit."
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Comma-separated proxy addresses or networks whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed; `*` trusts every peer.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_key")
    @classmethod
    def _empty_key_means_none(cls, value: str | None) -> str | None:
        """``API_KEY=`` (empty) turns the check off rather than accepting an empty header."""
        return value or None

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _endpoint_is_a_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """CORS_ORIGINS=https://a.example,https://b.example; a list given in code passes as is."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, origins: list[str]) -> list[str]:
        """A browser's Origin is scheme://host[:port] exactly: "https://a.example/" (with a
        path) would never match, so it is refused here instead of failing silently."""
        for origin in origins:
            parts = urlsplit(origin)
            is_origin = (
                parts.scheme in ("http", "https")
                and parts.netloc
                and not (parts.path or parts.query or parts.fragment)
            )
            if origin != "*" and not is_origin:
                raise ValueError(f"not an origin (scheme://host[:port]) or *: {origin!r}")
        return origins

    @model_validator(mode="after")
    def _one_file_fits_a_request(self) -> Settings:
        if self.max_request_bytes < self.max_upload_bytes:
            raise ValueError(
                f"MAX_REQUEST_BYTES ({self.max_request_bytes}) must be at least "
                f"MAX_UPLOAD_BYTES ({self.max_upload_bytes})"
            )
        return self

    @field_validator("gallery_url")
    @classmethod
    def _gallery_url_is_milvus(cls, value: str | None) -> str | None:
        """The form is checked here, at start-up; the Milvus store reads the rest (the
        collection prefix, credentials) when it connects."""
        if not value:
            return None
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError:
            raise ValueError("the port of GALLERY_URL is not a port number") from None
        if parts.scheme != "milvus" or not parts.hostname or parts.query or parts.fragment:
            # not echoed: the URL may hold a password
            raise ValueError("GALLERY_URL is not a milvus://HOST:PORT URL")
        return value

    @model_validator(mode="after")
    def _gallery_outside_model_dir(self) -> Settings:
        """MODEL_DIR holds what training publishes and the server only reads (a read-only
        volume in the images); a gallery in it would be written there and scanned as models."""
        gallery, models = self.gallery_dir.resolve(), self.model_dir.resolve()
        if gallery == models or gallery.is_relative_to(models):
            raise ValueError(
                f"GALLERY_DIR ({self.gallery_dir}) must not be inside MODEL_DIR ({self.model_dir})"
            )
        return self

    @model_validator(mode="after")
    def _gallery_page_within_max(self) -> Settings:
        if self.gallery_page_size > self.gallery_max_page_size:
            raise ValueError(
                f"GALLERY_PAGE_SIZE ({self.gallery_page_size}) must not exceed "
                f"GALLERY_MAX_PAGE_SIZE ({self.gallery_max_page_size})"
            )
        return self

    @model_validator(mode="after")
    def _default_k_within_max_k(self) -> Settings:
        if self.default_k > self.max_k:
            raise ValueError(f"DEFAULT_K ({self.default_k}) must not exceed MAX_K ({self.max_k})")
        return self

    @property
    def model_thread_count(self) -> int:
        """MODEL_THREADS, or its default: the usable CPUs shared among the workers."""
        if self.model_threads is not None:
            return self.model_threads
        return max(1, usable_cpus() // self.workers)

    @property
    def queue_limit(self) -> int:
        """QUEUE_MAX_IMAGES, or its default: a full batch for every request admission lets in
        (INFERENCE_CONCURRENCY), and room for the largest request (MAX_FILES_PER_REQUEST
        images). Admission already bounds what may wait; the queue refuses only requests
        larger than a batch piling up, which their deadlines would not shed soon enough."""
        if self.queue_max_images is not None:
            return self.queue_max_images
        return max(self.inference_limit * self.batch_max_size, self.max_files_per_request)

    @property
    def inference_limit(self) -> int:
        """INFERENCE_CONCURRENCY, or its default: enough requests to fill two batches."""
        if self.inference_concurrency is not None:
            return self.inference_concurrency
        return 2 * self.batch_max_size

    @property
    def large_decode_limit(self) -> int:
        """LARGE_DECODES, or its default: the CPUs this process may run on."""
        if self.large_decodes is not None:
            return self.large_decodes
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1

    @model_validator(mode="after")
    def _queue_holds_the_largest_request(self) -> Settings:
        """A request of MAX_FILES_PER_REQUEST images must fit an empty queue, or it could
        never be served."""
        if self.queue_max_images is not None and self.queue_max_images < self.max_files_per_request:
            raise ValueError(
                f"QUEUE_MAX_IMAGES ({self.queue_max_images}) must be at least "
                f"MAX_FILES_PER_REQUEST ({self.max_files_per_request})"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
