"""TensorFlow side of serving: pick the device, load one SavedModel version, call signatures.

Only the SavedModel and its ``metadata.json`` are read (the training code is never imported).
A version is validated before it may serve: metadata fitting ``contract.metadata``,
signatures present, and a dummy batch through every signature yields the shapes the
metadata promises.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from app.core.errors import InvalidModelError
from app.core.ood import OodCheck, read_ood_check
from contract import metadata as contract_metadata
from contract.metadata import AutoencoderMetadata, ClassifierMetadata, SavedModelMetadata
from contract.signatures import (
    AUTOENCODER_OPTIONAL,
    AUTOENCODER_SERVED,
    CLASSIFIER_OUTPUTS,
    CLASSIFY,
    DENOISE,
    ENCODE,
    ENCODE_CODES,
    INPUT,
)

logger = logging.getLogger(__name__)

_VALIDATION_BATCH = 2  # contract.metadata bounds the input size this batch is made at
# What a serving signature's graph may contain besides stateless maths: reading its
# variables, calling its own functions, branching, looping and asserting. Any other stateful
# op (file writes, checkpoint save/restore, prints, readers, datasets, tables, variable
# assignment, Python calls) refuses the version, and so do the stateless ops that read
# files. MODEL_DIR stays trusted code (docs/security.md, "MODEL_DIR is trusted code"); this
# catches a signature that does file IO, not every way a graph could misbehave.
_ALLOWED_STATEFUL_OPS = frozenset(
    (
        "ReadVariableOp",
        "StatefulPartitionedCall",
        "PartitionedCall",
        "If",
        "While",
        "Case",
        "Assert",
    )
)
_FILE_READING_OPS = frozenset(
    ("ReadFile", "MatchingFiles", "ImmutableConst", "DecodeProtoV2", "EncodeProto")
)
OUTPUT_FIELD, SCORE_FIELD = "outputs", "scores"  # fields of a scored caller's rows
# A version's metadata: which schema (classifier or autoencoder) the caller loaded it with.
M = TypeVar("M", bound=SavedModelMetadata)


def use_threads(count: int) -> None:
    """Give TensorFlow's intra-op and inter-op pools ``count`` threads each. Only a process
    whose TensorFlow runtime has not started yet can change them (a ``python -m app``
    worker); elsewhere, e.g. a second app in one test process, the first values stay."""
    for setter in (
        tf.config.threading.set_intra_op_parallelism_threads,
        tf.config.threading.set_inter_op_parallelism_threads,
    ):
        try:
            setter(count)
        except RuntimeError:
            logger.debug("TensorFlow already runs: its thread pools keep their sizes")


def select_device(requested: str) -> str:
    """Return the TensorFlow device to run on (``"/GPU:0"`` or ``"/CPU:0"``).

    ``auto`` and ``gpu`` use the first GPU when TensorFlow sees one (with memory growth, so
    one process does not grab the whole card); ``cpu`` forces the CPU.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "cpu" or not gpus:
        if requested == "gpu":
            logger.warning("DEVICE=gpu but TensorFlow sees no GPU; serving on the CPU")
        return "/CPU:0"
    for gpu in gpus:
        # RuntimeError: already initialised by an earlier app in this process.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    return "/GPU:0"


def settle_heap() -> None:
    """Keep the cyclic garbage collector off the request path once models have changed.

    TensorFlow and the loaded models leave ~400k long-lived objects. A full collection walks
    all of them while holding the GIL, stalling every request ~190 ms (that set the p99 at
    concurrency 32); frozen objects are skipped by every later collection. Unfreezing first
    lets this one collection reclaim a swapped-out model, whose objects form reference cycles.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def read_metadata(folder: Path) -> contract_metadata.VersionMetadata:
    """The version's metadata, validated by the schema training wrote it with."""
    try:
        return contract_metadata.read_metadata(folder)
    except contract_metadata.MetadataError as error:
        raise InvalidModelError(str(error)) from error


@dataclass
class LoadedModel(Generic[M]):
    """One validated model version; ``run`` is what the micro-batcher calls. ``metadata``
    is its ``metadata.json`` as ``contract.metadata`` reads it (``ClassifierMetadata`` for
    the classifier, ``AutoencoderMetadata`` for the autoencoder)."""

    name: str
    version: int
    folder: Path
    metadata: M
    height: int
    width: int
    device: str
    signatures: dict[str, Any] = field(repr=False)  # name -> concrete function
    outputs: dict[str, str] = field(repr=False)  # name -> key of its output tensor
    _saved_model: Any = field(repr=False)  # keeps the variables the signatures use alive
    ood: OodCheck | None = None  # None: the version computes no out-of-distribution score
    _callers: dict[str, Callable[[np.ndarray], np.ndarray]] = field(init=False, repr=False)
    _scored_callers: dict[str, Callable[[np.ndarray], np.ndarray]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._callers = {signature: partial(self.run, signature) for signature in self.outputs}
        self._scored_callers = {
            signature: partial(self.run_scored, signature)
            for signature in self.outputs
            if self.scores(signature)
        }

    def caller(self, signature: str) -> Callable[[np.ndarray], np.ndarray]:
        """A stable callable per signature: the micro-batcher batches requests that share it."""
        return self._callers[signature]

    def scores(self, signature: str) -> bool:
        """Whether ``signature`` also outputs this version's out-of-distribution score."""
        return self.ood is not None and self.ood.scores(signature)

    def inference_caller(self, signature: str) -> Callable[[np.ndarray], np.ndarray]:
        """The scored caller where the version has a score, else the plain one; the rows it
        yields go through :func:`split_scores`."""
        return self._scored_callers.get(signature) or self._callers[signature]

    def run_scored(self, signature: str, images: np.ndarray) -> np.ndarray:
        """Like ``run``, but one structured row per image: the output and its OOD score."""
        assert self.ood is not None
        with tf.device(self.device):
            result = self.signatures[signature](**{INPUT: tf.convert_to_tensor(images, tf.float32)})
        output = result[self.outputs[signature]].numpy()
        score = result[self.ood.output].numpy().astype(np.float32)
        rows = np.empty(
            len(output),
            dtype=[(OUTPUT_FIELD, output.dtype, output.shape[1:]), (SCORE_FIELD, np.float32)],
        )
        rows[OUTPUT_FIELD] = output
        rows[SCORE_FIELD] = score.reshape(len(output))
        return rows

    def run(self, signature: str, images: np.ndarray) -> np.ndarray:
        """Call ``signature`` on a ``[batch, H, W, 3]`` float32 batch; returns its output array."""
        with tf.device(self.device):
            tensor = tf.convert_to_tensor(images, tf.float32)
            result = self.signatures[signature](**{INPUT: tensor})
        return result[self.outputs[signature]].numpy()

    def describe(self) -> dict[str, Any]:
        """What ``/models`` shows: identity, input shape, signatures, training metrics and
        the summaries of the metadata's own blocks (in full: GET /models/{name}/report)."""
        return {
            "name": self.name,
            "version": self.version,
            "input_shape": [self.height, self.width, 3],
            "signatures": sorted(self.signatures),
            **self.metadata.summary(),
        }


def load_model(
    folder: Path,
    device: str,
    required_signatures: Mapping[str, str],
    schema: type[M],
    optional_signatures: Mapping[str, str] | None = None,
) -> LoadedModel[M]:
    """Load and validate ``folder``, whose metadata must be a ``schema``. Both mappings take
    signature -> output key; an optional signature is loaded (and validated) when the
    SavedModel has it, so that versions exported before it existed keep serving."""
    metadata = read_metadata(folder)
    if not isinstance(metadata, schema):
        raise InvalidModelError(f"{folder}: {metadata.name} metadata is not {schema.__name__}")
    try:
        with tf.device(device):
            saved_model = tf.saved_model.load(str(folder))
    except Exception as error:  # TF raises many types for a corrupt SavedModel
        logger.error("%s: cannot load SavedModel: %s", folder, error)
        raise InvalidModelError(
            f"{folder}: cannot load SavedModel ({type(error).__name__}; see the server log)"
        ) from error
    present = {
        signature: output
        for signature, output in (optional_signatures or {}).items()
        if signature in saved_model.signatures
    }
    outputs = {
        signature: metadata.output_of(signature, default_output)
        for signature, default_output in {**required_signatures, **present}.items()
    }
    missing = sorted(set(outputs) - set(saved_model.signatures))
    if missing:
        raise InvalidModelError(f"{folder}: SavedModel lacks signature(s) {', '.join(missing)}")
    for signature in outputs:
        forbidden = forbidden_ops(saved_model.signatures[signature])
        if forbidden:
            raise InvalidModelError(
                f"{folder}: signature {signature} uses ops a serving model may not: "
                + ", ".join(forbidden)
            )
    return LoadedModel(
        name=metadata.name,
        version=metadata.version,
        folder=folder,
        metadata=metadata,
        height=metadata.input.height,
        width=metadata.input.width,
        device=device,
        signatures={signature: saved_model.signatures[signature] for signature in outputs},
        outputs=outputs,
        _saved_model=saved_model,
        ood=read_ood_check(metadata),
    )


def forbidden_ops(function: Any) -> list[str]:
    """Op types in a concrete function's graph, nested functions included, that a serving
    signature may not use (see ``_ALLOWED_STATEFUL_OPS``); unknown op types count too."""
    graph = function.graph.as_graph_def()
    own_functions = {library.signature.name for library in graph.library.function}
    op_types = {node.op for node in graph.node}
    for library in graph.library.function:
        op_types.update(node.op for node in library.node_def)
    forbidden = set()
    for op_type in op_types - own_functions:
        definition = op_def_registry.get(op_type)
        if (
            definition is None
            or op_type in _FILE_READING_OPS
            or (definition.is_stateful and op_type not in _ALLOWED_STATEFUL_OPS)
        ):
            forbidden.add(op_type)
    return sorted(forbidden)


def split_scores(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(outputs, scores)`` from an ``inference_caller``'s rows; scores None when unscored."""
    if rows.dtype.names is None:
        return rows, None
    return rows[OUTPUT_FIELD], rows[SCORE_FIELD]


def dummy_outputs(model: LoadedModel) -> dict[str, np.ndarray]:
    """Run every signature on a zero batch; a version that cannot do this never serves."""
    batch = np.zeros((_VALIDATION_BATCH, model.height, model.width, 3), np.float32)
    results: dict[str, np.ndarray] = {}
    for signature in model.outputs:
        try:
            results[signature] = model.run(signature, batch)
        except Exception as error:  # wrong input name, dtype or shape in the SavedModel
            logger.error(
                "%s: signature %s fails on a dummy batch: %s", model.folder, signature, error
            )
            raise InvalidModelError(
                f"{model.folder}: signature {signature} fails on a dummy batch "
                f"({type(error).__name__}; see the server log)"
            ) from error
        if results[signature].shape[0] != _VALIDATION_BATCH:
            raise InvalidModelError(
                f"{model.folder}: signature {signature} returned shape "
                f"{results[signature].shape} for a batch of {_VALIDATION_BATCH}"
            )
        if model.scores(signature):
            check_scores(model, signature, batch)
    return results


def check_scores(model: LoadedModel, signature: str, batch: np.ndarray) -> None:
    """A version whose metadata promises an OOD score must deliver one number per image."""
    assert model.ood is not None
    result = model.signatures[signature](**{INPUT: tf.convert_to_tensor(batch, tf.float32)})
    score = result.get(model.ood.output)
    if score is None or tuple(score.shape) not in ((len(batch),), (len(batch), 1)):
        raise InvalidModelError(
            f"{model.folder}: metadata ood promises output {model.ood.output!r} of one number"
            f" per image from {signature}, got {None if score is None else tuple(score.shape)}"
        )


def load_classifier(folder: Path, device: str) -> LoadedModel[ClassifierMetadata]:
    """A classifier version: ``serving_default`` gives one probability row per image."""
    model = load_model(folder, device, CLASSIFIER_OUTPUTS, ClassifierMetadata)
    class_names = model.metadata.class_names  # a non-empty list of distinct names: validated
    probabilities = dummy_outputs(model)[CLASSIFY]
    if probabilities.shape[1:] != (len(class_names),):
        raise InvalidModelError(
            f"{folder}: {probabilities.shape[1:]} outputs for {len(class_names)} class names"
        )
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3):
        raise InvalidModelError(f"{folder}: serving_default outputs do not sum to 1")
    return model


def load_autoencoder(folder: Path, device: str) -> LoadedModel[AutoencoderMetadata]:
    """An autoencoder version: ``denoise`` keeps the input shape, ``encode`` (and
    ``encode_codes`` where the version has it) give code_dim."""
    model = load_model(
        folder, device, AUTOENCODER_SERVED, AutoencoderMetadata, AUTOENCODER_OPTIONAL
    )
    code_dim = model.metadata.code_dim  # a positive integer: validated
    outputs = dummy_outputs(model)
    if outputs[DENOISE].shape[1:] != (model.height, model.width, 3):
        raise InvalidModelError(
            f"{folder}: denoise returns {outputs[DENOISE].shape[1:]}, "
            f"expected {(model.height, model.width, 3)}"
        )
    for signature in {ENCODE, ENCODE_CODES} & set(outputs):
        if outputs[signature].shape[1:] != (code_dim,):
            raise InvalidModelError(
                f"{folder}: {signature} returns {outputs[signature].shape[1:]}, "
                f"metadata code_dim {code_dim}"
            )
    return model
