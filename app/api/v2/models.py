"""How the models look through the Open Inference Protocol: their tensors, and turning the
input tensor into the ``[N, H, W, 3]`` batch they take.

Each model has two alternative inputs (send exactly one): ``image``, BYTES ``[N, 1]`` (or
``[N]``) holding encoded image files, decoded and resized like an upload to the task
endpoints; or ``images``, FP32 ``[N, H, W, 3]`` pixels in [0, 1] at the model's input size
(UINT8 pixels in [0, 255] are taken too and scaled as training scales them). The request
is read against ``tensor_limits`` (app/api/v2/protocol.py), so its input already fits the
model when it gets here. The gallery index is not a tensor model and is not exposed here
(use ``/similar``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import numpy as np
from starlette.datastructures import UploadFile

from app.api.overload.decode_pool import DecodePool
from app.api.uploads import RawImage, Upload, read_uploads
from app.api.v2.protocol import (
    IMAGE_INPUT,
    MAX_JSON_BYTES,
    PIXELS_INPUT,
    Element,
    InferRequest,
    ProtocolError,
    TensorLimits,
)
from app.core.deadline import Deadline
from app.core.registry import AUTOENCODER, CLASSIFIER
from app.core.runtime import LoadedModel
from app.settings import Settings
from contract.metadata import AutoencoderMetadata, ClassifierMetadata
from contract.signatures import CLASSIFY, DENOISE, ENCODE

PLATFORM = "tensorflow_savedmodel"
_CONFIG_TYPES = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32"}


@dataclass(frozen=True)
class Output:
    """One output tensor: which micro-batcher runs which signature of the model."""

    name: str
    batcher: str
    signature: str


OUTPUTS: dict[str, tuple[Output, ...]] = {
    CLASSIFIER: (Output("probabilities", "classify", CLASSIFY),),
    AUTOENCODER: (
        Output("denoised", "denoise", DENOISE),
        Output("codes", "encode", ENCODE),
    ),
}
MODELS = tuple(OUTPUTS)
# Every micro-batcher a v2 request may use (the task endpoints' own).
BATCHERS = tuple(dict.fromkeys(output.batcher for each in OUTPUTS.values() for output in each))


def tensor_metadata(model: LoadedModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(inputs, outputs)`` as the metadata endpoint lists them (-1: any batch size)."""
    pixels = [-1, model.height, model.width, 3]
    inputs = [
        {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1, 1]},
        {"name": PIXELS_INPUT, "datatype": "FP32", "shape": pixels},
    ]
    shapes = _signature_output_shapes(model)
    outputs = [
        {"name": output.name, "datatype": "FP32", "shape": shapes[output.signature]}
        for output in OUTPUTS[model.name]
    ]
    return inputs, outputs


def _signature_output_shapes(model: LoadedModel) -> dict[str, list[int]]:
    """Signature -> the shape of its output, from the model's metadata (-1: any batch)."""
    metadata = model.metadata
    if isinstance(metadata, ClassifierMetadata):
        return {CLASSIFY: [-1, len(metadata.class_names)]}
    if isinstance(metadata, AutoencoderMetadata):
        return {DENOISE: [-1, model.height, model.width, 3], ENCODE: [-1, metadata.code_dim]}
    return {}


def model_config(model: LoadedModel, max_batch_size: int) -> dict[str, Any]:
    """The subset of Triton's model configuration (its ``config`` extension) that load
    generators such as perf_analyzer read: the batch limit, that requests are batched
    dynamically, and that each input is optional (send one of the two)."""
    inputs, outputs = tensor_metadata(model)

    def tensors(specs: list[dict[str, Any]], optional: bool) -> list[dict[str, Any]]:
        return [
            {
                "name": spec["name"],
                "data_type": _CONFIG_TYPES[spec["datatype"]],
                "dims": spec["shape"][1:],
                **({"optional": True} if optional else {}),
            }
            for spec in specs
        ]

    return {
        "name": model.name,
        "platform": PLATFORM,
        "max_batch_size": max_batch_size,
        "dynamic_batching": {},
        "input": tensors(inputs, optional=True),
        "output": tensors(outputs, optional=False),
    }


def tensor_limits(model: LoadedModel, settings: Settings) -> TensorLimits:
    """What an infer request to ``model`` may carry: its input size from its metadata,
    ``MAX_FILES_PER_REQUEST`` images of at most ``MAX_UPLOAD_BYTES`` each and
    ``MAX_REQUEST_BYTES`` together."""
    return TensorLimits(
        height=model.height,
        width=model.width,
        max_images=settings.max_files_per_request,
        max_element_bytes=settings.max_upload_bytes,
        max_request_bytes=settings.max_request_bytes,
    )


def max_json_bytes(settings: Settings) -> int:
    """The JSON part's cap: ``MAX_JSON_BYTES``, or one upload's worth when that is less."""
    return min(settings.max_upload_bytes, MAX_JSON_BYTES)


def requested_outputs(model_name: str, request: InferRequest) -> list[tuple[Output, bool]]:
    """The outputs to compute, each with whether it goes back as binary data; each output
    at most once (each one asked for is a model call)."""
    known = {output.name: output for output in OUTPUTS[model_name]}
    if request.outputs is None:
        return [(output, request.binary_outputs) for output in known.values()]
    chosen: dict[str, tuple[Output, bool]] = {}
    for wanted in request.outputs:
        if wanted.name not in known:
            raise ProtocolError(
                f"{model_name} has no output {wanted.name[:80]!r}; outputs: {', '.join(known)}"
            )
        if wanted.name in chosen:
            raise ProtocolError(f"output {wanted.name!r} is asked for twice")
        chosen[wanted.name] = (known[wanted.name], wanted.binary or request.binary_outputs)
    return list(chosen.values())


async def model_batch(
    model: LoadedModel,
    request: InferRequest,
    settings: Settings,
    deadline: Deadline,
    pool: DecodePool,
) -> np.ndarray:
    """The request's input as a float32 ``[N, H, W, 3]`` batch for ``model``; encoded
    images are decoded as uploads to the task endpoints are (``read_uploads``: the same
    decode pool, limits and deadline). The shape and datatype were checked as the request
    was read (``tensor_limits``)."""
    (tensor,) = request.inputs
    if isinstance(tensor.data, list):
        images = [_upload(f"image {position}", data) for position, data in enumerate(tensor.data)]
        inputs = await read_uploads(images, settings, model.height, model.width, deadline, pool)
        return np.stack([item.pixels for item in inputs])
    if not np.isfinite(tensor.data).all():
        raise ProtocolError(f"input {PIXELS_INPUT!r} holds NaN or infinite values")
    return tensor.data


def _upload(name: str, element: Element) -> Upload:
    """A BYTES element as ``read_uploads`` takes it: its bytes, or its spooled file as a
    form part's is (read on a decoding thread)."""
    if isinstance(element, bytes):
        return RawImage(name, element)
    size = element.seek(0, 2)
    element.seek(0)
    return UploadFile(cast(BinaryIO, element), size=size, filename=name)
