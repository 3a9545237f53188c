"""Read a ``tf.data`` pipeline's steps back from its graph, source first."""

from __future__ import annotations

import tensorflow as tf


def dataset_steps(dataset: tf.data.Dataset) -> list[str]:
    """The dataset ops from the source to ``dataset`` itself, e.g. ``["TensorSliceDataset",
    "ParallelMapDatasetV2", ..., "PrefetchDataset"]``."""
    serialized = tf.raw_ops.DatasetToGraphV2(
        input_dataset=dataset._variant_tensor,  # no public accessor for the graph
        external_state_policy=0,  # warn, do not fail, on stateful random ops
    )
    graph = tf.compat.v1.GraphDef.FromString(serialized.numpy())
    datasets = {
        node.name: node
        for node in graph.node
        if node.op.endswith("Dataset") or ("Dataset" in node.op)
    }
    consumed = {node.input[0] for node in datasets.values() if node.input}
    (sink,) = (name for name in datasets if name not in consumed)
    steps = []
    node = datasets.get(sink)
    while node is not None:
        steps.append(node.op)
        node = datasets.get(node.input[0]) if node.input else None
    return steps[::-1]
