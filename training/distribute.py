"""Pick the ``tf.distribute`` strategy from the environment."""

from __future__ import annotations

import functools
import json
import os

import tensorflow as tf


@functools.cache
def strategy_from_environment() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when ``TF_CONFIG`` names a cluster, Mirrored with several GPUs,
    otherwise the default (single-device) strategy.

    Cached: a second MultiWorkerMirroredStrategy in one process breaks the workers'
    collective coordination (``python -m training all`` trains several models).
    """
    tf_config = os.environ.get("TF_CONFIG")
    if tf_config:
        cluster = json.loads(tf_config).get("cluster", {})
        if sum(len(hosts) for hosts in cluster.values()) > 1:
            return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
