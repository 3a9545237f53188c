"""Response bodies, with examples for the OpenAPI page."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelRef(BaseModel):
    name: str = Field(examples=["signs_classifier"])
    version: int = Field(examples=[3])


_OOD_SCORE = Field(
    None,
    examples=[41.7],
    description="Out-of-distribution score: higher means less like the model's training data."
    " Absent (null) for model versions trained without one.",
)
_IN_DISTRIBUTION = Field(
    None,
    examples=[True],
    description="False when the score is above the threshold fitted on validation data:"
    " the input does not look like the training data, so the answer is a guess.",
)


class Prediction(BaseModel):
    filename: str = Field(examples=["hand.jpg"])
    label: str = Field(examples=["2"], description="Class name with the highest probability.")
    class_id: int = Field(examples=[2])
    confidence: float = Field(examples=[0.93], description="Probability of ``label``.")
    probabilities: dict[str, float] = Field(
        examples=[{"0": 0.01, "1": 0.02, "2": 0.93, "3": 0.02, "4": 0.01, "5": 0.01}]
    )
    ood_score: float | None = _OOD_SCORE
    in_distribution: bool | None = _IN_DISTRIBUTION


class ClassifyResponse(BaseModel):
    model: ModelRef
    predictions: list[Prediction]


class DenoiseResponse(BaseModel):
    model: ModelRef = Field(examples=[{"name": "malaria_autoencoder", "version": 2}])
    width: int = Field(examples=[64])
    height: int = Field(examples=[64])
    image_base64: str = Field(description="The denoised cell as base64-encoded PNG.")
    ood_score: float | None = _OOD_SCORE
    in_distribution: bool | None = _IN_DISTRIBUTION


class Neighbour(BaseModel):
    id: int = Field(examples=[1234], description="Gallery id; the image is at ``image_url``.")
    label: str = Field(examples=["parasitized"])
    distance: float = Field(
        examples=[0.08],
        description="Smaller is closer: cosine distance in a cosine space, else Euclidean.",
    )
    image_url: str = Field(examples=["/gallery/1234.png"])


class IndexRef(BaseModel):
    """The gallery searched: its size, its store, and the encoder version of its codes."""

    size: int = Field(examples=[22046], description="Cells in the gallery.")
    type: str = Field(examples=["sqlite"], description="The gallery store: sqlite or milvus.")
    version: int = Field(
        examples=[2], description="Encoder version of the codes searched (X-Index-Version)."
    )


class SimilarResponse(BaseModel):
    results: list[Neighbour]
    index: IndexRef
    model: ModelRef = Field(description="The encoder that made the query's code.")
    ood_score: float | None = _OOD_SCORE
    in_distribution: bool | None = _IN_DISTRIBUTION


class GalleryItemInfo(BaseModel):
    id: int = Field(examples=[4503599627370495])
    label: str = Field(examples=["parasitized"])
    note: str = Field(examples=["ring form, thin smear"])
    created: float = Field(examples=[1796000000.5], description="When it was added, Unix seconds.")
    source: Literal["offline", "added"] = Field(
        description="`offline`: a cell of the offline index the gallery started from; "
        "`added`: added through POST /gallery."
    )
    image_url: str = Field(examples=["/gallery/4503599627370495.png"])


class AddedItem(GalleryItemInfo):
    created_now: bool = Field(
        description="False when the gallery already held this cell (the same pixels): the "
        "item is the one stored before, its label and note unchanged."
    )


class GalleryAddResponse(BaseModel):
    items: list[AddedItem] = Field(description="One per uploaded file, in upload order.")


class GalleryPage(BaseModel):
    items: list[GalleryItemInfo] = Field(description="In ascending id order.")
    next: int | None = Field(
        examples=[4503599627370495],
        description="Pass as `after` for the next page; null after the last page.",
    )


class GalleryProgress(BaseModel):
    encoder_version: int = Field(examples=[3], description="The encoder being filled in.")
    done: int = Field(examples=[12000])
    total: int = Field(examples=[22046])


class GalleryInfo(BaseModel):
    """The gallery as the answering worker last saw it (refreshed about twice a second)."""

    store: str = Field(examples=["sqlite"])
    ready: bool = Field(description="/similar can answer (codes and their encoder are here).")
    reason: str | None = Field(None, description="Why not ready.")
    encoder_version: int | None = Field(
        None, examples=[2], description="Encoder version of the codes searched now."
    )
    dimension: int | None = Field(None, examples=[64])
    metric: str | None = Field(None, examples=["cosine"])
    items: int | None = Field(None, examples=[22046])
    labels: dict[str, int] | None = Field(
        None, examples=[{"parasitized": 11023, "uninfected": 11023}]
    )
    offline_version: int | None = Field(
        None, examples=[2], description="The offline malaria_index version this worker seeded."
    )
    seeding: GalleryProgress | None = Field(
        None, description="Offline cells added so far while the offline index is seeded."
    )
    reencoding: GalleryProgress | None = Field(
        None,
        description="After a new autoencoder version: cells with a code of it so far. "
        "/similar switches to it when done reaches total.",
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class ModelReadiness(BaseModel):
    ready: bool
    version: int | None = Field(examples=[3], description="The default version, if any.")
    loaded: list[int] = Field(examples=[[3, 2]], description="Loaded versions, newest first.")
    reason: str | None = Field(None, description="Why the model is not ready.")


TRAINING_DESCRIPTION = (
    "The status a training run beside the server last wrote into MODEL_DIR (job, state, "
    "epoch, step, eta_s, pending); absent when there is none or it has finished."
)
TRAINING_EXAMPLE = {
    "job": "malaria",
    "state": "training",
    "epoch": 3,
    "epochs": 8,
    "eta_s": 412.0,
    "pending": ["index"],
}


GALLERY_DESCRIPTION = (
    "The living gallery /similar searches: its store, size, the encoder version of its "
    "codes, and the progress of a background seeding or re-encoding."
)


class Ready(BaseModel):
    status: str = Field(examples=["ready"])
    models: dict[str, int] = Field(
        examples=[{"signs_classifier": 3, "malaria_autoencoder": 2, "malaria_index": 2}]
    )
    components: dict[str, ModelReadiness] = Field(
        description="Per model: ready or not (its endpoints answer 503 while not)."
    )
    training: dict[str, Any] | None = Field(
        None, description=TRAINING_DESCRIPTION, examples=[TRAINING_EXAMPLE]
    )
    gallery: GalleryInfo | None = Field(None, description=GALLERY_DESCRIPTION)


class NotReady(BaseModel):
    detail: str = Field(examples=["not ready: malaria_autoencoder: no version folder"])
    components: dict[str, ModelReadiness]
    training: dict[str, Any] | None = Field(
        None, description=TRAINING_DESCRIPTION, examples=[TRAINING_EXAMPLE]
    )
    gallery: GalleryInfo | None = Field(None, description=GALLERY_DESCRIPTION)


class ModelVersionsInfo(BaseModel):
    loaded: list[int] = Field(examples=[[4, 3]], description="Newest first.")
    default: int | None = Field(
        examples=[3], description="What requests without a pin get (`stable` label, or newest)."
    )
    labels: dict[str, int] = Field(examples=[{"stable": 3, "canary": 4}])
    canary_share: float = Field(
        examples=[0.1], description="Share of unpinned requests sent to the `canary` version."
    )
    labels_problem: str | None = Field(
        None, description="Why labels.json is ignored (the labels in use stay), if it is."
    )


class ModelsResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    device: str = Field(examples=["CPU:0"], description="Where TensorFlow runs the models.")
    device_requested: str = Field(examples=["auto"])
    models: list[dict[str, Any]]
    index: dict[str, Any] | None
    similar_encoder: int | None = Field(
        description="Autoencoder version that /similar uses: the one the gallery's active "
        "codes were encoded with."
    )
    missing: dict[str, str] = Field(description="Components that are not loaded, with the reason.")
    refused: dict[str, list[dict[str, Any]]] = Field(
        description="Versions on disk that failed validation, with the reason."
    )
    versions: dict[str, ModelVersionsInfo] = Field(
        description="Per model: loaded versions (each can be pinned), labels, canary share."
    )
    gallery: GalleryInfo | None = Field(None, description=GALLERY_DESCRIPTION)


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, examples=[4])
    canary_share: float | None = Field(
        None,
        ge=0,
        le=1,
        examples=[0.1],
        description="Only with the `canary` label: share of unpinned requests it gets.",
    )


class WorkersInfo(BaseModel):
    """Where an admin change stands in the server's worker processes when the answer is sent."""

    confirmed: int = Field(
        examples=[2], description="Workers serving the new state (the one answering included)."
    )
    total: int = Field(examples=[2], description="Live workers that serve.")
    pending: list[int] = Field(
        default_factory=list,
        description="Pids of workers that had not applied the change when the wait ended: each "
        "applies it when the reload it is in ends, and serves the state before until then.",
    )
    failed: list[int] = Field(
        default_factory=list,
        description="Pids of workers whose reload failed (see the server log): they serve the "
        "state before until a later reload succeeds.",
    )
    waited_s: float = Field(0.0, description="How long the answer waited for the others.")
    detail: str | None = Field(None, description="Why a change holds in fewer workers, if so.")


class LabelsResponse(BaseModel):
    name: str = Field(examples=["signs_classifier"])
    versions: ModelVersionsInfo
    persisted: bool = Field(
        description="False when labels.json could not be written (read-only models folder): "
        "the change holds in the answering worker until the server restarts."
    )
    workers: WorkersInfo


class RollbackResponse(LabelsResponse):
    rolled_back_from: int = Field(examples=[4])
    serving: int = Field(examples=[3])


class ReportFileRef(BaseModel):
    name: str = Field(examples=["reliability_diagram.png"])
    url: str = Field(examples=["/models/signs_classifier/report/reliability_diagram.png"])
    content_type: str = Field(examples=["image/png"])
    bytes: int = Field(examples=[24187])


class ReportResponse(BaseModel):
    name: str = Field(examples=["signs_classifier"])
    version: int = Field(examples=[3])
    created: str | None = Field(None, examples=["2026-11-29T14:40:00+00:00"])
    files: list[ReportFileRef]
    metrics: dict[str, Any] = Field(description="Held-out test metrics from training.")
    ood: dict[str, Any] | None = Field(
        None, description="The out-of-distribution score, its threshold and how it was judged."
    )
    calibration: dict[str, Any] | None = Field(
        None, description="Temperature scaling and the calibration error before and after."
    )


class ReloadResponse(BaseModel):
    changes: list[str] = Field(
        examples=[["signs_classifier 2 -> 3"]], description="What the answering worker changed."
    )
    missing: dict[str, str]
    workers: WorkersInfo


class ErrorResponse(BaseModel):
    detail: Any = Field(examples=["hand.gif: not an image in a supported format"])


class V2Error(BaseModel):
    """Open Inference Protocol errors carry ``error`` (what v2 clients read)."""

    error: str = Field(examples=["signs_classifier version 9 is not loaded (loaded: 2, 1)"])


class V2ServerMetadata(BaseModel):
    name: str = Field(examples=["cellsign"])
    version: str = Field(examples=["0.1.0"])
    extensions: list[str] = Field(examples=[["binary_tensor_data"]])


class V2Tensor(BaseModel):
    name: str = Field(examples=["images"])
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(examples=[[-1, 64, 64, 3]])


class V2ModelMetadata(BaseModel):
    name: str = Field(examples=["signs_classifier"])
    versions: list[str] = Field(examples=[["2", "1"]], description="Loaded versions.")
    platform: str = Field(examples=["tensorflow_savedmodel"])
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]


class V2ModelReady(BaseModel):
    name: str = Field(examples=["signs_classifier"])
    ready: bool
