"""What every training job takes from the command line, as one object.

``python -m training`` builds one :class:`JobOptions` from its arguments and hands it to
each job it runs; a job reads the parameters it uses (the index job has no epochs of its
own, nor an input size: it takes the encoder's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobOptions:
    """The jobs' shared parameters; None for epochs or image size: the job's own default."""

    # Data root (``../shared/data``) or a job-specific path: class folders for signs, a
    # folder or zip of cell images for malaria and index; None downloads the default data.
    data: Path | None = None
    out: Path = Path("models")  # the models folder new versions are written into
    seed: int = 0  # splits, initialisation and augmentation
    quick: bool = False  # a small subset and few epochs (CI, a first look)
    epochs: int | None = None
    image_size: int | None = None  # square input side in pixels

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"--image-size must be at least 1, got {self.image_size}")
