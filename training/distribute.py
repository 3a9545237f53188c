"""Pick the ``tf.distribute`` strategy from the environment."""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import keras
import tensorflow as tf


def multi_worker_requested() -> bool:
    """True when ``TF_CONFIG`` names a cluster of more than one task."""
    tf_config = os.environ.get("TF_CONFIG")
    if not tf_config:
        return False
    cluster = json.loads(tf_config).get("cluster", {})
    return sum(len(hosts) for hosts in cluster.values()) > 1


@functools.cache
def strategy_from_environment() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when ``TF_CONFIG`` names a cluster, Mirrored with several GPUs,
    otherwise the default (single-device) strategy.

    Cached: a second MultiWorkerMirroredStrategy in one process breaks the workers'
    collective coordination (``python -m training all`` trains several models).
    """
    if multi_worker_requested():
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker cluster."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0


def worker_folder(strategy: tf.distribute.Strategy, folder: Path) -> Path:
    """Every worker must save (saving is collective) but only the chief's files are kept;
    the others write to their own scratch subfolder."""
    if is_chief(strategy):
        return Path(folder)
    resolver = strategy.cluster_resolver
    return Path(folder) / f".{resolver.task_type}-{resolver.task_id}"


def cpu_has_bfloat16() -> bool:
    """True when the CPU multiplies bfloat16 natively (AMX or AVX512-BF16, read from Linux's
    ``/proc/cpuinfo``). Without them oneDNN emulates bfloat16, slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def training_policy(requested: str | None = None) -> str:
    """The Keras dtype policy to train in: ``requested`` when given; otherwise
    ``mixed_float16`` on a GPU (tensor cores), ``mixed_bfloat16`` on a CPU with native
    bfloat16 (the autoencoder's train step measured 0.42 instead of 0.86 CPU s there) and
    ``float32`` elsewhere."""
    if requested is not None:
        return requested
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bfloat16() else "float32"


@contextlib.contextmanager
def training_precision(requested: str | None = None) -> Iterator[str]:
    """Build and train under ``training_policy(requested)``; yields the policy's name.

    Variables stay float32 under either mixed policy. The previous global policy is restored
    on exit, so models built later (the float32 export copy, the next job) are float32.
    """
    policy = training_policy(requested)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)
