"""``python -m training.evaluate VERSION_DIR DATA``: score an exported classifier on images
it never saw, such as a separate test folder of the same classes.

It reads the version's own metadata for its class names and input size and runs its
``serving_default`` signature on the images as the server would (``contract.pixels``), so
the figures are what serving that version would give. ``DATA`` is class folders whose
names are the version's classes (a folder of a class the model lacks is an error).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import DataError


def evaluate(version_dir: Path, data: Path) -> dict[str, Any]:
    """Accuracy, balanced accuracy and per-class precision/recall of ``version_dir`` on the
    class folders in ``data``."""
    import tensorflow as tf

    from contract.pixels import scale
    from contract.signatures import CLASSIFY, PROBABILITIES
    from training.signs.data import load_class_folders
    from training.signs.train import per_class_scores
    from training.signs.transfer import find_source

    source = find_source(version_dir)
    names, size = source.class_names, source.metadata.input.height
    images = load_class_folders(Path(data), size)
    unknown = sorted(set(images.class_names) - set(names))
    if unknown:
        raise DataError(f"{data}: classes the model does not know: {', '.join(unknown)}")
    truth = np.array([names.index(images.class_names[label]) for label in images.labels])
    signature = tf.saved_model.load(str(source.folder)).signatures[CLASSIFY]
    output = source.metadata.output_of(CLASSIFY, PROBABILITIES)
    predicted = np.concatenate(
        [
            signature(images=tf.constant(scale(images.images[start : start + 128])))[output]
            .numpy()
            .argmax(axis=1)
            for start in range(0, len(truth), 128)
        ]
    )
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = per_class_scores(confusion, names)
    present = [scores["recall"] for scores in per_class.values() if scores["support"]]
    return {
        "version": str(source.folder),
        "images": len(truth),
        "accuracy": float((predicted == truth).mean()),
        "balanced_accuracy": float(np.mean(present)),
        "per_class": per_class,
        "skipped_images": len(images.skipped),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__)
    parser.add_argument("version", type=Path, help="an exported classifier version folder")
    parser.add_argument("data", type=Path, help="class folders DATA/<class>/*.jpg")
    arguments = parser.parse_args(argv)
    try:
        result = evaluate(arguments.version, arguments.data)
    except DataError as error:
        print(f"error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
