"""``metadata.json``: the schema every model version's metadata must fit.

Training builds each version's metadata through these classes (a job fills in its
``*Fields``, ``training.export`` adds the ``VersionStamp``) and the server reads it back into
the same classes, so a field cannot be written in one shape and read in another, and neither
side spells a field's name: every block is a class here. Unknown fields are kept
(``extra="allow"``): new optional fields can be added without breaking older readers, and
older files stay loadable.

``data``, ``hyperparameters`` and ``metrics`` are free-form: each job records what it
used and measured there, and people (reports, ``/models``) read them; the server never does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from contract.layout import AUTOENCODER, CLASSIFIER, INDEX, METADATA_FILE
from contract.pixels import SCALE_DESCRIPTION
from contract.signatures import INPUT

# Bounds checked before anything is loaded or allocated. The server runs a dummy batch at
# the declared input size through every signature, and 8000x8000 took 28 s and 6 GB.
MAX_INPUT_SIDE = 1024
MAX_METADATA_BYTES = 1024 * 1024

# A threshold the server compares scores with: a JSON number (not a string, not a bool),
# neither NaN nor infinite.
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class MetadataError(ValueError):
    """A version's metadata is missing, unreadable or does not fit the schema."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Figures(_Open):
    """A block of measured figures. A declared figure that was not measured (None) is left
    out of the file rather than written as null, so a score without, say, noisy test
    images is written as before."""

    @model_serializer(mode="wrap")
    def _leave_out_unmeasured(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        declared = type(self).model_fields
        return {
            key: value
            for key, value in handler(self).items()
            if value is not None or key not in declared
        }


class InputSpec(_Open):
    """The one input tensor: ``[batch, height, width, channels]`` float32 = pixel / 255."""

    height: int = Field(gt=0, le=MAX_INPUT_SIDE)
    width: int = Field(gt=0, le=MAX_INPUT_SIDE)
    channels: Literal[3] = 3
    dtype: Literal["float32"] = "float32"
    scale: Literal["pixel / 255"] = SCALE_DESCRIPTION

    @classmethod
    def square(cls, size: int) -> InputSpec:
        return cls(height=size, width=size)


class SignatureSpec(_Open):
    input: str = INPUT
    output: str


def signature_specs(outputs: dict[str, str]) -> dict[str, SignatureSpec]:
    """The ``signatures`` entry for signature -> output tensor names (input ``images``)."""
    return {signature: SignatureSpec(output=output) for signature, output in outputs.items()}


# --- the ``ood`` block -------------------------------------------------------------------

_HEADLINE = {"threshold", "auroc", "test_false_flag_rate", "noisy_test_false_flag_rate"}


class NegativeSetFigures(_Figures):
    """One set of images the model never learned: how many, the AUROC of test images
    against them, and the share of them the threshold flags."""

    images: NonNegativeInt | None = None
    auroc: float | None = None
    flagged_rate: float | None = None


class OodFigures(_Figures):
    """How one OOD score did: its threshold (set on validation images), then the AUROC of
    held-out test images against never-seen negatives and the flag rates at the threshold."""

    threshold: FiniteNumber
    auroc: float | None = None
    test_false_flag_rate: float | None = None
    test_images: NonNegativeInt | None = None
    negative_images: NonNegativeInt | None = None
    negatives: dict[str, NegativeSetFigures] | None = None
    # noise level (sigma, as text) -> share of noisy test images flagged (the autoencoder)
    noisy_test_false_flag_rate: dict[str, float] | None = None

    def headline(self) -> OodFigures:
        """The few figures a summary shows (the candidates' list, the ``metrics`` entry)."""
        return OodFigures.model_validate(self.model_dump(include=_HEADLINE))


class _OodCheck(_Figures):
    """What the server applies: the score it reads and what flags an input."""

    score: str | None = None  # the score's name, for people; the server only compares it
    output: str = Field(min_length=1)  # the signature output holding it (``OOD_SCORE``)
    signatures: list[str]  # the signatures that output it
    higher_is_ood: bool = True
    in_distribution: str = "the training data"  # what the model knows, in words
    validation_false_flag_target: float | None = None  # the share of validation flagged


class OodSpec(OodFigures, _OodCheck):
    """The ``ood`` block: the chosen score (which signature output, its threshold and its
    direction), what the model counts as in distribution, the chosen score's figures, and
    the headline figures of every candidate it was chosen from. A version without the
    block computes no score and serves as before."""

    candidates: dict[str, OodFigures] | None = None

    def summary(self) -> dict[str, Any]:
        """What ``/models`` shows of the check (only the fields the file holds)."""
        return self.model_dump(
            include={"score", "threshold", "higher_is_ood", "auroc", "test_false_flag_rate"},
            exclude_unset=True,
        )

    def as_metrics(self) -> dict[str, Any]:
        """The version's ``metrics`` entry for its check: the chosen score's headline."""
        return {"ood": self.model_dump(include={"score", *_HEADLINE})}


# --- the ``calibration`` block -----------------------------------------------------------


class ReliabilityCurve(_Open):
    """Per confidence bin (empty bins left out): mean confidence, accuracy, image count."""

    confidence: list[float] = Field(default_factory=list)
    accuracy: list[float] = Field(default_factory=list)
    count: list[NonNegativeInt] = Field(default_factory=list)


class CalibrationSpec(_Figures):
    """The ``calibration`` block: the temperature the exported probabilities are divided by,
    how it was fitted, and the calibration error (ECE) on held-out test images before and
    after it."""

    method: str | None = None
    log_t_prior_sigma: float | None = None
    temperature: float = Field(gt=0, allow_inf_nan=False)
    ece_bins: PositiveInt | None = None
    test_ece_before: float | None = None
    test_ece_after: float | None = None
    validation_nll_before: float | None = None
    validation_nll_after: float | None = None
    test_reliability_before: ReliabilityCurve = Field(default_factory=ReliabilityCurve)
    test_reliability_after: ReliabilityCurve = Field(default_factory=ReliabilityCurve)

    def summary(self) -> dict[str, Any]:
        """What ``/models`` shows of it (only the fields the file holds)."""
        return self.model_dump(
            include={"temperature", "test_ece_before", "test_ece_after"}, exclude_unset=True
        )

    def as_metrics(self) -> dict[str, Any]:
        """The version's ``metrics`` entries for its calibration: test ECE before and after."""
        return self.model_dump(include={"test_ece_before", "test_ece_after"})


# --- the other blocks --------------------------------------------------------------------


class InitFromSpec(_Open):
    """The ``init_from`` block of a classifier started from another version's weights
    (``--init-from``): which version, and which layers were copied, fresh and frozen."""

    folder: str
    name: str
    version: PositiveInt
    source_classes: list[str]
    new_head: bool  # the classes differ: the output layer started afresh
    layers_copied: NonNegativeInt = 0
    layers_fresh: list[str] = Field(default_factory=list)
    layers_frozen: NonNegativeInt = 0
    phases: list[dict[str, Any]] = Field(default_factory=list)  # one record per training phase


class BottleneckSpec(_Open):
    """The ``bottleneck`` block: the decoder's code against the input, in values."""

    shape: list[PositiveInt]
    values: PositiveInt
    input_values: PositiveInt
    compression: float  # input values per code value


class EncoderReference(_Open):
    name: str
    version: PositiveInt


# --- whole versions ----------------------------------------------------------------------


class VersionStamp(_Open):
    """Which version this is and what made it; ``training.export`` stamps every version."""

    name: str
    version: PositiveInt
    created: str | None = None
    tensorflow_version: str | None = None
    commit: str | None = None  # git commit of the training code, when known


class VersionFields(_Open):
    """What every job records: the run's data, configuration and metrics (free-form per
    model; reports and ``/models`` show them)."""

    data: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    def run_config(self) -> dict[str, Any]:
        """The run's data and configuration, under their metadata names (a report's
        ``config.json``)."""
        return {"data": self.data, "hyperparameters": self.hyperparameters}


class VersionMetadata(VersionFields, VersionStamp):
    """A whole ``metadata.json``: the stamp, then the job's fields."""

    def summary(self) -> dict[str, Any]:
        """What ``/models`` shows of a version besides its name, version and signatures."""
        return {"metrics": self.metrics, "created": self.created}

    def report(self) -> dict[str, Any]:
        """What a version's report shows of its metadata: when it was made, its metrics and
        its trust blocks in full, as the file holds them (None: it has no such block)."""
        return {"created": self.created, "metrics": self.metrics, "ood": None, "calibration": None}


class SavedModelFields(VersionFields):
    input: InputSpec
    # Signature -> its tensor names; a signature not listed uses the names in
    # ``contract.signatures``.
    signatures: dict[str, SignatureSpec] = Field(default_factory=dict)
    ood: OodSpec | None = None  # None: the version computes no out-of-distribution score


class SavedModelMetadata(SavedModelFields, VersionMetadata):
    def output_of(self, signature: str, default: str) -> str:
        spec = self.signatures.get(signature)
        return spec.output if spec is not None else default

    def summary(self) -> dict[str, Any]:
        shown = {**super().summary(), **self._outputs()}
        if self.ood is not None:
            shown["ood"] = self.ood.summary()
        return shown

    def _outputs(self) -> dict[str, Any]:
        """What the model's outputs mean (class names, code size), for ``summary``."""
        return {}

    def report(self) -> dict[str, Any]:
        return {**super().report(), "ood": _as_written(self.ood)}


class ClassifierFields(SavedModelFields):
    # Output index -> the label the server answers with; a trained-on-user-data version
    # carries the user's folder names here, in the order of the model's outputs.
    class_names: list[str] = Field(min_length=1)
    calibration: CalibrationSpec | None = None
    init_from: InitFromSpec | None = None

    @field_validator("class_names")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        """Each name keys one probability in the answers, so two alike would lose one."""
        if len(set(names)) != len(names):
            raise ValueError("class names must be distinct")
        return names


class ClassifierMetadata(ClassifierFields, SavedModelMetadata):
    def _outputs(self) -> dict[str, Any]:
        return {"class_names": self.class_names}

    def summary(self) -> dict[str, Any]:
        shown = super().summary()
        if self.calibration is not None:
            shown["calibration"] = self.calibration.summary()
        return shown

    def report(self) -> dict[str, Any]:
        return {**super().report(), "calibration": _as_written(self.calibration)}


class AutoencoderFields(SavedModelFields):
    code_dim: PositiveInt
    bottleneck: BottleneckSpec | None = None


class AutoencoderMetadata(AutoencoderFields, SavedModelMetadata):
    def _outputs(self) -> dict[str, Any]:
        return {"code_dim": self.code_dim}


class IndexFields(VersionFields):
    encoder: EncoderReference | None = None  # the autoencoder version whose codes it holds
    dimension: PositiveInt | None = None
    index_type: str | None = None
    metric: str | None = None
    normalize_codes: bool = False
    codes: str | None = None  # which codes the index holds, in words
    size: NonNegativeInt | None = None


class IndexMetadata(IndexFields, VersionMetadata):
    pass


SCHEMAS: dict[str, type[VersionMetadata]] = {
    CLASSIFIER: ClassifierMetadata,
    AUTOENCODER: AutoencoderMetadata,
    INDEX: IndexMetadata,
}


def schema_for(model_name: str) -> type[VersionMetadata]:
    """The schema of ``model_name``'s versions (the common part for a model not listed)."""
    return SCHEMAS.get(model_name, VersionMetadata)


def validate(fields: dict[str, Any], where: str) -> VersionMetadata:
    """``fields`` checked against the schema its ``name`` calls for; ``where`` names the
    version in the error."""
    schema = schema_for(str(fields.get("name")))
    try:
        return schema.model_validate(fields)
    except ValidationError as error:
        raise MetadataError(
            f"{where}: {METADATA_FILE} does not fit the contract: {_why(error)}"
        ) from None


def stamped(
    stamp: VersionStamp, fields: VersionFields | dict[str, Any], where: str
) -> VersionMetadata:
    """A version's whole metadata: a job's ``fields`` under the ``stamp`` export gives it,
    checked against the schema of the stamp's model; ``where`` names the version."""
    return validate({**dict(fields), **dict(stamp)}, where)


def to_json(metadata: VersionMetadata) -> str:
    """The file's text; numpy scalars and arrays in free-form fields become plain JSON."""
    return json.dumps(metadata.model_dump(), indent=2, default=_jsonable)


def read_metadata(folder: Path) -> VersionMetadata:
    """Read and validate ``<folder>/metadata.json``, which must name the folder's model and
    version (a copied folder left with its old number is refused, not served under it)."""
    path = folder / METADATA_FILE
    try:
        with path.open("rb") as file:
            text = file.read(MAX_METADATA_BYTES + 1)
        if len(text) > MAX_METADATA_BYTES:
            raise MetadataError(f"{path}: larger than {MAX_METADATA_BYTES} bytes")
        fields = json.loads(text)
    except FileNotFoundError as error:
        raise MetadataError(f"{folder}: {METADATA_FILE} is missing") from error
    except (OSError, ValueError) as error:
        raise MetadataError(f"{path}: unreadable JSON: {error}") from error
    if not isinstance(fields, dict):
        raise MetadataError(f"{path}: expected a JSON object")
    expected_name, expected_version = folder.parent.name, folder.name
    stamp_name, stamp_version = fields.get("name"), fields.get("version")
    if stamp_name != expected_name or str(stamp_version) != expected_version:
        raise MetadataError(
            f"{folder}: metadata names {stamp_name!r} version "
            f"{stamp_version!r}, expected {expected_name!r} version {expected_version}"
        )
    return validate(fields, str(folder))


def _as_written(block: BaseModel | None) -> dict[str, Any] | None:
    """A block's fields as its file holds them (defaults it left out are not added)."""
    return None if block is None else block.model_dump(exclude_unset=True)


def _why(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'metadata'}: {problem['msg']}"
        for problem in error.errors()
    )


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
