"""``python -m training signs|malaria|index|all``: the offline training jobs.

Each job finds its own data under ``--data`` (a data root such as ``../shared/data`` or a
job-specific path). Heavy modules are imported inside the commands so ``--help`` and
argument errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from training.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
JOBS = ("signs", "malaria", "index")

log = logging.getLogger("training")


def default_data_root() -> Path | None:
    """``../shared/data`` beside the repository when present; otherwise None (download)."""
    return SHARED_DATA if SHARED_DATA.is_dir() else None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the cellsign models and export them as versioned SavedModels.",
    )
    parser.add_argument("job", choices=(*JOBS, "all"), help="what to train; all = in this order")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data root or job-specific path (default: ../shared/data if present, else download)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("models"), help="models folder (default: models)"
    )
    parser.add_argument("--epochs", type=positive_int, help="override the job's epoch count")
    parser.add_argument("--image-size", type=positive_int, help="square input size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed for splits and training")
    parser.add_argument("--quick", action="store_true", help="small subset, few epochs (CI)")
    return parser


def run_job(job: str, arguments: argparse.Namespace) -> Path:
    """Run one job and return the version folder it exported."""
    data = arguments.data if arguments.data is not None else default_data_root()
    common = {"seed": arguments.seed, "quick": arguments.quick}
    sizes = {"epochs": arguments.epochs, "image_size": arguments.image_size}
    if job == "signs":
        from training.signs import train_signs

        return train_signs(data, arguments.out, **sizes, **common)
    if job == "malaria":
        from training.malaria import train_malaria

        return train_malaria(data, arguments.out, **sizes, **common)
    from training.index import build_index

    return build_index(data, arguments.out, **common)


def main(argv: Sequence[str] | None = None, run: Callable[..., Path] = run_job) -> int:
    """Exit 0 on success, 2 on a user error (one ``error:`` line on stderr, no traceback)."""
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # our progress lines, without TensorFlow's INFO chatter
    if arguments.data is not None and not arguments.data.exists():
        return _user_error(f"data path not found: {arguments.data}")
    jobs = JOBS if arguments.job == "all" else (arguments.job,)
    try:
        for job in jobs:
            version_dir = run(job, arguments)
            print(f"{job}: exported {version_dir}")
    except (DataError, ValueError, FileNotFoundError) as error:
        return _user_error(str(error))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def _user_error(message: str) -> int:
    first_line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"error: {first_line}", file=sys.stderr)
    return 2


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter out of the job's own log lines."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
