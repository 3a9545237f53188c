"""Open Inference Protocol conformance: the official tritonclient against a real uvicorn."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from app.core.registry import AUTOENCODER, CLASSIFIER
from benchmarks.servers import UvicornServer
from contract.pixels import model_input
from tests.app.api.v2.bodies import binary_body, tensor
from tests.app.helpers import AppClientFactory
from tests.app.model_files import clone_version, copy_models
from tests.app.samples import gradient_image, image_bytes

PNG = image_bytes(size=(80, 60))
JPEG = image_bytes("JPEG", size=(64, 64))
MIB = 1024 * 1024
PIXEL_BYTES = 64 * 64 * 3 * 4  # one FP32 image at the classifier's input size


@pytest.fixture(scope="module")
def server(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn on a copy of the quick models with two classifier versions; yields host:port."""
    folder = tmp_path_factory.mktemp("v2")
    model_dir = copy_models(quick_models, folder / "models")
    clone_version(model_dir, CLASSIFIER, 1, 2)
    env = {"MODEL_DIR": str(model_dir), "DEVICE": "cpu", "RELOAD_INTERVAL_S": "0"}
    with UvicornServer("app.main:app", env, folder / "uvicorn.log", "/v2/health/ready") as running:
        yield running.base_url.removeprefix("http://")


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server) as triton_client:
        yield triton_client


def image_input(images: list[bytes], binary: bool) -> triton.InferInput:
    """Binary: shape [N, 1] as the metadata says; JSON: the flat [N] form, also accepted."""
    shape = [len(images), 1] if binary else [len(images)]
    tensor = triton.InferInput("image", shape, "BYTES")
    if binary:
        array = np.array(images, dtype=np.object_).reshape(shape)
        tensor.set_data_from_numpy(array, binary_data=True)
    else:  # JSON carries BYTES as strings: the image goes base64
        encoded = [base64.b64encode(image) for image in images]
        tensor.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
    return tensor


def pixels_input(pixels: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("images", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels.astype(np.float32), binary_data=binary)
    return tensor


def output(name: str, binary: bool) -> triton.InferRequestedOutput:
    return triton.InferRequestedOutput(name, binary_data=binary)


def test_server_is_live_and_ready_and_describes_itself(client: triton.InferenceServerClient):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "cellsign"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_lists_versions_and_tensors(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata(CLASSIFIER)
    assert metadata["name"] == CLASSIFIER
    assert metadata["versions"] == ["2", "1"]
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "images", "datatype": "FP32", "shape": [-1, 64, 64, 3]},
    ]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 6]}]
    autoencoder = client.get_model_metadata(AUTOENCODER, "1")
    assert [tensor["name"] for tensor in autoencoder["outputs"]] == ["denoised", "codes"]
    assert autoencoder["outputs"][1]["shape"] == [-1, 64]


def test_model_config_tells_load_generators_the_batch_limit_and_optional_inputs(
    client: triton.InferenceServerClient,
) -> None:
    config = client.get_model_config(CLASSIFIER, "1")
    assert config["max_batch_size"] == 64  # MAX_FILES_PER_REQUEST
    assert config["input"] == [
        {"name": "image", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
        {"name": "images", "data_type": "TYPE_FP32", "dims": [64, 64, 3], "optional": True},
    ]
    assert config["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [6]}]


def test_model_readiness_per_model_and_version(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready(CLASSIFIER)
    assert client.is_model_ready(CLASSIFIER, "1")
    assert client.is_model_ready(AUTOENCODER)
    assert not client.is_model_ready(CLASSIFIER, "9")
    assert not client.is_model_ready("malaria_index")  # not a tensor model: /similar serves it
    assert not client.is_model_ready("no_such_model")


def test_binary_and_json_bytes_and_fp32_inputs_give_the_same_probabilities(
    client: triton.InferenceServerClient, server: str
) -> None:
    binary = client.infer(CLASSIFIER, [image_input([PNG, JPEG], binary=True)])  # binary out
    probabilities = binary.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (2, 6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert binary.get_response()["model_version"] == "2"

    as_json = client.infer(
        CLASSIFIER,
        [image_input([PNG, JPEG], binary=False)],
        outputs=[output("probabilities", binary=False)],
    )
    assert "data" in as_json.get_response()["outputs"][0]  # the output came back as JSON
    np.testing.assert_allclose(as_json.as_numpy("probabilities"), probabilities, atol=1e-6)

    pixels = np.stack([model_input(gradient_image((80, 60)), 64, 64)])
    for binary_input in (True, False):
        fp32 = client.infer(CLASSIFIER, [pixels_input(pixels, binary_input)])
        np.testing.assert_allclose(fp32.as_numpy("probabilities"), probabilities[:1], atol=1e-5)

    classify = httpx.post(f"http://{server}/classify", files={"file": ("x.png", PNG)})
    expected = list(classify.json()["predictions"][0]["probabilities"].values())
    np.testing.assert_allclose(probabilities[0], expected, atol=1e-5)  # same as the task API


def test_an_image_over_a_mib_is_spooled_and_read_like_a_form_part(
    client: triton.InferenceServerClient, server: str
) -> None:
    bmp = image_bytes("BMP", size=(640, 600))
    assert len(bmp) > MIB  # over TensorLimits.spool_element_bytes: it goes to a file
    result = client.infer(CLASSIFIER, [image_input([bmp, PNG], binary=True)])
    probabilities = result.as_numpy("probabilities")
    for row, image in zip(probabilities, (bmp, PNG), strict=True):
        classify = httpx.post(f"http://{server}/classify", files={"file": ("x", image)})
        expected = list(classify.json()["predictions"][0]["probabilities"].values())
        np.testing.assert_allclose(row, expected, atol=1e-5)


def test_pinned_version_and_its_header(client: triton.InferenceServerClient, server: str) -> None:
    result = client.infer(CLASSIFIER, [image_input([PNG], True)], model_version="1")
    assert result.get_response()["model_version"] == "1"
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [_b64(PNG)]}]}
    response = httpx.post(f"http://{server}/v2/models/{CLASSIFIER}/versions/1/infer", json=body)
    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == "1"


def test_autoencoder_outputs_are_chosen_by_the_request(
    client: triton.InferenceServerClient,
) -> None:
    inputs = [image_input([PNG], binary=True)]
    codes_only = client.infer(AUTOENCODER, inputs, outputs=[output("codes", binary=True)])
    assert codes_only.as_numpy("codes").shape == (1, 64)
    assert codes_only.as_numpy("denoised") is None
    both = client.infer(AUTOENCODER, inputs)
    denoised = both.as_numpy("denoised")
    assert denoised.shape == (1, 48, 48, 3)
    assert denoised.min() >= 0.0 and denoised.max() <= 1.0
    np.testing.assert_allclose(both.as_numpy("codes"), codes_only.as_numpy("codes"), atol=1e-6)


@pytest.mark.parametrize(
    ("inputs", "model", "version", "message"),
    [
        (lambda: [pixels_input(np.zeros((1, 10, 10, 3)))], CLASSIFIER, "", "must have shape"),
        (lambda: [_int32_images()], CLASSIFIER, "", "datatype 'INT32' is not supported"),
        (lambda: [image_input([b"not an image"], True)], CLASSIFIER, "", "not an image"),
        (lambda: [image_input([PNG], True)], "no_such_model", "", "unknown model"),
        (lambda: [image_input([PNG], True)], CLASSIFIER, "9", "version 9 is not loaded"),
    ],
    ids=["wrong-shape", "wrong-datatype", "not-an-image", "unknown-model", "unloaded-version"],
)
def test_bad_requests_are_refused_with_a_v2_error(
    client: triton.InferenceServerClient, inputs, model: str, version: str, message: str
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, inputs(), model_version=version)
    assert message in raised.value.message()
    assert raised.value.status() in ("400", "404", "415")


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{not json", {}, 400, "not JSON"),
        (b'{"inputs": []}', {}, 400, "non-empty list"),
        (b'{"inputs": [{"name": "image"}]}', {"Inference-Header-Content-Length": "999"}, 400, ""),
        (
            json.dumps(
                {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%"]}]}
            ).encode(),
            {},
            400,
            "base64",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "image",
                            "datatype": "BYTES",
                            "shape": [1],
                            "parameters": {"binary_data_size": 4},
                        }
                    ]
                }
            ).encode()
            + b"\xff\xff\xff\x7f",
            {"Inference-Header-Content-Length": "-"},
            400,
            "Inference-Header-Content-Length",
        ),
    ],
    ids=["not-json", "no-inputs", "header-length-past-body", "json-bytes-not-base64", "bad-len"],
)
def test_malformed_bodies_get_400_json_errors(
    server: str, body: bytes, headers: dict, status: int, message: str
) -> None:
    response = httpx.post(
        f"http://{server}/v2/models/{CLASSIFIER}/infer", content=body, headers=headers
    )
    assert response.status_code == status
    assert message in response.json()["error"]


def test_truncated_bytes_element_is_refused(server: str) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    body = header + (1000).to_bytes(4, "little") + b"abcd"  # claims 1000 bytes, has 4
    response = httpx.post(
        f"http://{server}/v2/models/{CLASSIFIER}/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "runs past its data" in response.json()["error"]


@pytest.mark.anyio
async def test_v2_and_task_requests_share_a_micro_batch(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    async with make_client(model_dir, batch_max_wait_ms=1000) as app_client:
        body = {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [_b64(PNG)]}]
        }
        v2, task = await asyncio.gather(
            app_client.post(f"/v2/models/{CLASSIFIER}/infer", json=body),
            app_client.post("/classify", files={"file": ("x.png", PNG)}),
        )
        assert v2.status_code == task.status_code == 200
        metrics = (await app_client.get("/metrics")).text
        assert 'cellsign_batch_size_count{batcher="classify"} 1.0' in metrics
        assert 'cellsign_batch_size_sum{batcher="classify"} 2.0' in metrics


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _int32_images() -> triton.InferInput:
    tensor = triton.InferInput("images", [1, 64, 64, 3], "INT32")
    tensor.set_data_from_numpy(np.zeros((1, 64, 64, 3), np.int32))
    return tensor


class CountedBody:
    """A request body that streams ``head`` then ``chunk`` after ``chunk`` for ever, counting
    what the server pulled: a refusal must come long before the body could end."""

    def __init__(self, head: bytes, chunk: bytes) -> None:
        self.head, self.chunk, self.sent = head, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        while True:
            self.sent += len(self.chunk)
            yield self.chunk


def _endless_image_body(chunk: bytes) -> tuple[CountedBody, str]:
    """A body whose JSON header announces one FP32 image, then ``chunk`` for ever; with its
    ``Inference-Header-Content-Length``."""
    head, length = binary_body(tensor("images", "FP32", [1, 64, 64, 3], size=PIXEL_BYTES))
    return CountedBody(head, chunk), length


@pytest.mark.anyio
async def test_a_declared_body_past_its_announced_size_is_refused_after_its_json_header(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    body, length = _endless_image_body(bytes(MIB))
    # 10 MB: within the route's body cap (MAX_REQUEST_BYTES), far past what the header announces
    headers = {"Inference-Header-Content-Length": length, "Content-Length": str(10 * 10**6)}
    async with make_client(model_dir) as app_client:
        response = await app_client.post(
            f"/v2/models/{CLASSIFIER}/infer", content=body, headers=headers
        )
    assert response.status_code == 413
    announced = len(body.head) + PIXEL_BYTES
    assert f"past the {announced} that its JSON header" in response.json()["error"]
    assert response.headers["connection"] == "close"  # its unread rest is no next request
    assert body.sent <= MIB  # nothing, or the chunk in flight


@pytest.mark.anyio
async def test_a_streamed_binary_part_longer_than_announced_is_cut_off(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    body, length = _endless_image_body(bytes(16 * 1024))  # chunked: no Content-Length
    async with make_client(model_dir) as app_client:
        response = await app_client.post(
            f"/v2/models/{CLASSIFIER}/infer",
            content=body,
            headers={"Inference-Header-Content-Length": length},
        )
    assert response.status_code == 413
    assert "its JSON header announces" in response.json()["error"]
    assert body.sent <= PIXEL_BYTES + 16 * 1024  # read up to the first chunk past it


@pytest.mark.anyio
async def test_an_oversized_bytes_element_is_refused_by_its_length_prefix(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    limit = 1000
    size = 2 * (limit + 4)
    head, length = binary_body(tensor("image", "BYTES", [2, 1], size=size))
    body = CountedBody(head + (limit + 1).to_bytes(4, "little"), b"\xff" * 100)
    async with make_client(model_dir, max_upload_bytes=limit) as app_client:
        response = await app_client.post(
            f"/v2/models/{CLASSIFIER}/infer",
            content=body,
            headers={"Inference-Header-Content-Length": length},
        )
    assert response.status_code == 413
    assert f"1001 bytes, over the {limit} byte limit of one image" in response.json()["error"]
    assert body.sent <= 100


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header_length", "version", "content", "status", "message"),
    [
        ("\u00b2".encode("latin-1"), None, b"{}", 400, "byte count within the body"),
        ("\u0661".encode(), None, b"{}", 400, "byte count within the body"),
        (b"9" * 5000, None, b"{}", 400, "byte count within the body"),
        (None, "\u0661", b"{}", 404, "versions are positive integers"),
        (None, "9" * 5000, b"{}", 404, "versions are positive integers"),
        (None, "0", b"{}", 404, "versions are positive integers"),
        (None, None, b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nests deeper"),
        (
            None,
            None,
            json.dumps(tensor("images", "FP32", [2**64 - 1] * 10_000, data=[])).encode(),
            400,
            "1 to 4 dimensions",
        ),
    ],
    ids=["superscript", "arabic-digit", "5000-digits", "v-arabic", "v-5000", "v-0", "deep", "dims"],
)
async def test_malformed_numbers_and_structures_are_4xx_not_500(
    make_client: AppClientFactory,
    model_dir: Path,
    header_length: bytes | None,
    version: str | None,
    content: bytes,
    status: int,
    message: str,
) -> None:
    path = f"/v2/models/{CLASSIFIER}" + (f"/versions/{version}" if version else "") + "/infer"
    headers = {} if header_length is None else {b"Inference-Header-Content-Length": header_length}
    async with make_client(model_dir) as app_client:
        response = await app_client.post(path, content=content, headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.anyio
async def test_uint8_pixels_give_the_fp32_probabilities(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    pixels = np.asarray(gradient_image((64, 64)).convert("RGB"), dtype=np.uint8)[None]
    scaled = model_input(gradient_image((64, 64)), 64, 64)[None]
    answers = []
    async with make_client(model_dir) as app_client:
        for datatype, raw in (("UINT8", pixels.tobytes()), ("FP32", scaled.tobytes())):
            head, length = binary_body(tensor("images", datatype, [1, 64, 64, 3], size=len(raw)))
            response = await app_client.post(
                f"/v2/models/{CLASSIFIER}/infer",
                content=head + raw,
                headers={"Inference-Header-Content-Length": length},
            )
            assert response.status_code == 200, response.text
            answers.append(response.json()["outputs"][0]["data"])
    np.testing.assert_allclose(answers[0], answers[1], atol=1e-6)


@pytest.mark.anyio
async def test_a_json_header_over_64_kib_reads_as_a_small_one(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    """Such a header is parsed on a worker thread (INLINE_JSON_BYTES): same answer."""
    raw = model_input(gradient_image((64, 64)), 64, 64)[None].tobytes()
    head, _ = binary_body(tensor("images", "FP32", [1, 64, 64, 3], size=len(raw)))
    answers = []
    async with make_client(model_dir) as app_client:
        for padding in (b"", b" " * 100_000):
            response = await app_client.post(
                f"/v2/models/{CLASSIFIER}/infer",
                content=head + padding + raw,
                headers={"Inference-Header-Content-Length": str(len(head + padding))},
            )
            assert response.status_code == 200, response.text
            answers.append(response.json()["outputs"][0]["data"])
    assert answers[0] == answers[1]


@pytest.mark.anyio
async def test_each_output_is_asked_for_at_most_once(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    request = tensor("image", "BYTES", [1], data=[_b64(PNG)])
    request["outputs"] = [{"name": "probabilities"}] * 2
    async with make_client(model_dir) as app_client:
        response = await app_client.post(f"/v2/models/{CLASSIFIER}/infer", json=request)
    assert response.status_code == 400
    assert "asked for twice" in response.json()["error"]


def test_the_server_answers_a_declared_10_mb_body_without_waiting_for_it(server: str) -> None:
    """Against uvicorn: the refusal comes after the JSON header alone, and the connection
    closes (the client never sends the 10 MB; a body over the route's cap is refused by its
    Content-Length before any of it is read)."""
    head, length = binary_body(tensor("images", "FP32", [1, 64, 64, 3], size=PIXEL_BYTES))
    host, port = server.split(":")
    request = (
        f"POST /v2/models/{CLASSIFIER}/infer HTTP/1.1\r\nHost: cellsign\r\n"
        f"Content-Length: {10 * 10**6}\r\nInference-Header-Content-Length: {length}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request + head)
        answer = b""
        while chunk := connection.recv(65536):  # ends when the server closes
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    assert b"connection: close" in rest.lower()
    assert b"that its JSON header announces" in rest


@pytest.mark.anyio
async def test_refusals_before_the_route_answer_in_v2s_error_shape(
    make_client: AppClientFactory, model_dir: Path
) -> None:
    """The body cap, the API key and the rest answer ``{"error"}`` under /v2/, as the routes
    do, and ``{"detail"}`` elsewhere."""
    path = f"/v2/models/{CLASSIFIER}/infer"
    too_long = {"Content-Length": str(10**12)}
    async with make_client(model_dir, api_key="k", api_key_scope="all") as app_client:
        unkeyed = await app_client.post(path, content=b"{}")
        oversized = await app_client.post(
            path, content=b"{}", headers={"X-API-Key": "k", **too_long}
        )
        classify = await app_client.post("/classify", content=b"{}", headers=too_long)
    assert unkeyed.status_code == 401 and "X-API-Key" in unkeyed.json()["error"]
    assert oversized.status_code == 413 and "byte limit" in oversized.json()["error"]
    assert classify.status_code == 401 and "detail" in classify.json()
