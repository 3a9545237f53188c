"""``python -m training signs|malaria|index|all``: the offline training jobs.

Each job finds its own data under ``--data`` (a data root such as ``../shared/data``, or a
job-specific path: class folders for ``signs``, a folder or zip of cell images for
``malaria`` and ``index``). Heavy modules are imported inside the commands so ``--help`` and
argument errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from contract.arguments import positive_int
from contract.layout import REPORT_DIR
from contract.training_status import status_path
from training.errors import DataError
from training.options import JobOptions
from training.progress import JobProgress

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
JOBS = ("signs", "malaria", "index")

log = logging.getLogger("training")


def default_data_root() -> Path | None:
    """``../shared/data`` beside the repository when present; otherwise None (download)."""
    return SHARED_DATA if SHARED_DATA.is_dir() else None


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
        help="data root or job-specific path: class folders DIR/<class>/*.jpg for signs, a"
        " folder or zip of cell images for malaria and index"
        " (default: ../shared/data if present, else download)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("models"), help="models folder (default: models)"
    )
    parser.add_argument("--epochs", type=positive_int, help="override the job's epoch count")
    parser.add_argument("--image-size", type=positive_int, help="square input size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed for splits and training")
    parser.add_argument("--quick", action="store_true", help="small subset, few epochs (CI)")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="signs: start from this exported classifier version (or its model folder's"
        " newest); a new head when the classes differ. It trains the head on the source's"
        " frozen convolutions, then every layer at a lower learning rate",
    )
    parser.add_argument(
        "--frozen-stages",
        action="store_true",
        help="with --init-from: train only the head, the source's convolutions stay frozen"
        " (better when the images look like the source's, worse for new kinds of image)",
    )
    return parser


def job_options(arguments: argparse.Namespace) -> JobOptions:
    """The jobs' shared parameters from the command line (data: ``default_data_root()``
    when not given)."""
    return JobOptions(
        data=arguments.data if arguments.data is not None else default_data_root(),
        out=arguments.out,
        seed=arguments.seed,
        quick=arguments.quick,
        epochs=arguments.epochs,
        image_size=arguments.image_size,
    )


def run_job(job: str, arguments: argparse.Namespace, progress: JobProgress) -> Path:
    """Run one job and return the version folder it exported."""
    options = job_options(arguments)
    if job == "signs":
        from training.signs.train import train_signs

        return train_signs(
            options,
            progress=progress,
            init_from=arguments.init_from,
            fine_tune=not arguments.frozen_stages,
        )
    if job == "malaria":
        from training.malaria.train import train_malaria

        return train_malaria(options, progress=progress)
    from training.malaria.index import build_index

    return build_index(options, progress=progress)


def main(argv: Sequence[str] | None = None, run: Callable[..., Path] = run_job) -> int:
    """Exit 0 on success, 2 on a user error (one ``error:`` line on stderr, no traceback)."""
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # our progress lines, without TensorFlow's INFO chatter
    if arguments.data is not None and not arguments.data.exists():
        return _user_error(f"data path not found: {arguments.data}")
    if arguments.init_from is not None and arguments.job not in ("signs", "all"):
        return _user_error(f"--init-from starts the classifier (signs), not {arguments.job}")
    if arguments.frozen_stages and arguments.init_from is None:
        return _user_error("--frozen-stages applies only with --init-from")
    jobs = JOBS if arguments.job == "all" else (arguments.job,)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run_jobs(jobs, arguments, run)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (``docker stop``, a supervisor) stops a job like Ctrl-C: the status file says
    so and the checkpoint stays for the next run to resume from."""
    raise KeyboardInterrupt


def _run_jobs(jobs: Sequence[str], arguments: argparse.Namespace, run: Callable[..., Path]) -> int:
    exported: list[tuple[str, Path]] = []
    for position, job in enumerate(jobs):
        progress = JobProgress(job, status_path(arguments.out), pending=jobs[position + 1 :])
        try:
            version_dir = run(job, arguments, progress)
        except (DataError, ValueError, FileNotFoundError) as error:
            progress.failed(f"{job}: {_first_line(str(error))}")
            return _user_error(str(error))
        except KeyboardInterrupt:
            progress.failed(f"{job}: interrupted; the same command resumes it")
            print("interrupted: run the same command again to resume", file=sys.stderr)
            return 130
        except BaseException as error:
            progress.failed(f"{job}: {type(error).__name__}: {_first_line(str(error))}")
            raise
        exported.append((job, version_dir))
        progress.done(summary_line(job, version_dir))
        print(f"{job}: exported {version_dir}", flush=True)
    print(f"done: models in {arguments.out}, status in {status_path(arguments.out)}")
    for job, version_dir in exported:
        print(f"  {job} {version_dir.name}: {summary_line(job, version_dir)}")
    return 0


def summary_line(job: str, version_dir: Path) -> str:
    """Where the job's report went and its held-out figures, from its ``metadata.json``."""
    from contract.metadata import MetadataError, read_metadata  # pydantic: after the job

    report = version_dir / REPORT_DIR
    try:
        metrics: dict[str, Any] = read_metadata(version_dir).metrics
    except MetadataError:
        return f"report {report}"
    figures = []
    if "test_accuracy" in metrics:
        figures.append(f"held-out test accuracy {metrics['test_accuracy']:.3f}")
    if "denoise_sigma_0.1" in metrics:
        gain = metrics["denoise_sigma_0.1"]["psnr_gain_db"]
        figures.append(f"held-out denoising gain at sigma 0.1 {gain:+.2f} dB")
    if "precision_at_10" in metrics:
        figures.append(f"held-out precision@10 {metrics['precision_at_10']['all']:.3f}")
    return "; ".join([f"report {report}", *figures])


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "unknown error"


def _user_error(message: str) -> int:
    print(f"error: {_first_line(message)}", file=sys.stderr)
    return 2


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter out of the job's own log lines."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
