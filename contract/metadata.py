"""``metadata.json``: the schema every model version's metadata must fit.

Training builds each version's metadata through these classes (``training.export``) and the
server validates what it reads with the same classes, so a field cannot be written in one
shape and read in another. Unknown fields are kept (``extra="allow"``): new optional fields
can be added without breaking older readers, and older files stay loadable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
)

from contract.layout import AUTOENCODER, CLASSIFIER, INDEX, METADATA_FILE
from contract.pixels import SCALE_DESCRIPTION
from contract.signatures import INPUT

# Bounds checked before anything is loaded or allocated. The server runs a dummy batch at
# the declared input size through every signature, and 8000x8000 took 28 s and 6 GB.
MAX_INPUT_SIDE = 1024
MAX_METADATA_BYTES = 1024 * 1024


class MetadataError(ValueError):
    """A version's metadata is missing, unreadable or does not fit the schema."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


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


class VersionMetadata(_Open):
    """What every version records: identity, provenance, and the run's config, data and
    metrics (free-form per model; reports and ``/models`` show them)."""

    name: str
    version: PositiveInt
    created: str | None = None
    tensorflow_version: str | None = None
    commit: str | None = None  # git commit of the training code, when known
    data: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)


class SavedModelMetadata(VersionMetadata):
    input: InputSpec
    # Signature -> its tensor names; a signature not listed uses the names in
    # ``contract.signatures``.
    signatures: dict[str, SignatureSpec] = Field(default_factory=dict)

    def output_of(self, signature: str, default: str) -> str:
        spec = self.signatures.get(signature)
        return spec.output if spec is not None else default


class ClassifierMetadata(SavedModelMetadata):
    # Output index -> the label the server answers with; a trained-on-user-data version
    # carries the user's folder names here, in the order of the model's outputs.
    class_names: list[str] = Field(min_length=1)

    @field_validator("class_names")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        """Each name keys one probability in the answers, so two alike would lose one."""
        if len(set(names)) != len(names):
            raise ValueError("class names must be distinct")
        return names


class AutoencoderMetadata(SavedModelMetadata):
    code_dim: PositiveInt


class EncoderReference(_Open):
    name: str
    version: PositiveInt


class IndexMetadata(VersionMetadata):
    encoder: EncoderReference | None = None  # the autoencoder version whose codes it holds
    dimension: PositiveInt | None = None
    index_type: str | None = None
    metric: str | None = None
    normalize_codes: bool = False
    size: NonNegativeInt | None = None


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
    if fields.get("name") != expected_name or str(fields.get("version")) != expected_version:
        raise MetadataError(
            f"{folder}: metadata names {fields.get('name')!r} version "
            f"{fields.get('version')!r}, expected {expected_name!r} version {expected_version}"
        )
    return validate(fields, str(folder))


def _why(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'metadata'}: {problem['msg']}"
        for problem in error.errors()
    )


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
