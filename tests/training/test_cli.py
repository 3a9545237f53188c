"""``python -m training``: argument and data errors, job order, and SIGNS end to end."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from contract.training_status import read_status
from training import cli
from training.errors import DataError
from training.options import JobOptions
from training.progress import JobProgress

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SIGNS = REPO_ROOT.parent / "shared" / "data" / "signs" / "train"


def _run_module(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_missing_data_path_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    completed = _run_module("signs", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        f"error: data path not found: {tmp_path / 'nowhere'}"
    ]
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    "arguments", [["signs", "--epochs", "0"], ["signs", "--image-size", "x"], ["train"]]
)
def test_bad_arguments_exit_2(arguments: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "error",
    [
        DataError("no readable SIGNS images in /x\nsecond line"),
        ValueError("bad"),
        FileNotFoundError("f"),
    ],
)
def test_user_errors_from_a_job_print_one_line(error: Exception, tmp_path: Path, capsys) -> None:
    def failing_job(job: str, arguments: argparse.Namespace, progress: JobProgress) -> Path:
        progress.note("loading")
        raise error

    out = tmp_path / "models"
    assert cli.main(["signs", "--data", str(tmp_path), "--out", str(out)], run=failing_job) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ")
    assert len(stderr.strip().splitlines()) == 1
    status = read_status(out)
    assert status["state"] == "failed" and status["message"].startswith("signs: ")


def test_empty_data_folder_is_a_user_error(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["signs", "--data", str(empty), "--out", str(tmp_path / "models")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: no images in {empty}: expected class sub-folders (DIR/<class>/*.jpg)"
        " or SIGNS files ({label}_IMG_{id}.jpg)"
    )


def test_all_runs_signs_malaria_index_in_order_with_shared_options(tmp_path: Path) -> None:
    seen: list[tuple[str, int, bool]] = []

    def record(job: str, arguments: argparse.Namespace, progress: JobProgress) -> Path:
        seen.append((job, arguments.seed, arguments.quick))
        assert progress.pending == list(cli.JOBS[len(seen) :])
        return tmp_path / job

    out = ["--out", str(tmp_path / "models")]
    arguments = ["all", "--data", str(tmp_path), "--seed", "5", "--quick", *out]
    assert cli.main(arguments, run=record) == 0
    assert seen == [("signs", 5, True), ("malaria", 5, True), ("index", 5, True)]
    status = read_status(tmp_path / "models")
    assert (status["job"], status["state"], status["pending"]) == ("index", "done", [])


@pytest.mark.skipif(not SHARED_SIGNS.is_dir(), reason="needs ../shared/data/signs/train")
def test_signs_quick_end_to_end_exports_a_loadable_version(tmp_path: Path) -> None:
    import tensorflow as tf

    completed = _run_module("signs", "--quick", "--data", str(SHARED_SIGNS), "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr[-3000:]
    version_dir = tmp_path / "signs_classifier" / "1"
    assert f"signs: exported {version_dir}" in completed.stdout
    assert completed.stdout.splitlines()[-1].startswith(
        f"  signs 1: report {version_dir / 'report'}; held-out test accuracy "
    )
    # Not a terminal: plain progress lines with rate and time left, and a finished status.
    assert "signs epoch 1/3: step " in completed.stderr and " steps/s, " in completed.stderr
    status = read_status(tmp_path)
    assert (status["job"], status["state"], status["epoch"]) == ("signs", "done", 3)

    metadata = json.loads((version_dir / "metadata.json").read_text())
    assert metadata["name"] == "signs_classifier" and metadata["version"] == 1
    assert metadata["class_names"] == [str(digit) for digit in range(6)]
    assert metadata["input"] == {
        "height": 64,
        "width": 64,
        "channels": 3,
        "dtype": "float32",
        "scale": "pixel / 255",
    }
    assert metadata["signatures"]["serving_default"] == {
        "input": "images",
        "output": "probabilities",
    }
    assert metadata["data"]["split_sizes"]["test"] > 0
    assert 0.0 <= metadata["metrics"]["test_accuracy"] <= 1.0
    for name in ("config.json", "metrics.json", "confusion_matrix.png", "learning_curves.png"):
        assert (version_dir / "report" / name).stat().st_size > 0
    assert not any((tmp_path / ".checkpoints").glob("*")), "a finished run leaves no checkpoint"

    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    probabilities = serve(images=tf.zeros([2, 64, 64, 3]))["probabilities"].numpy()
    assert probabilities.shape == (2, 6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_too_small_image_size_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert cli.main(["signs", "--image-size", "8", "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --image-size must be at least 32, got 8"


def test_interrupt_exits_130_and_says_how_to_resume(tmp_path: Path, capsys) -> None:
    def interrupted_job(job: str, arguments: argparse.Namespace, progress: JobProgress) -> Path:
        progress.start_epoch(1, 3, steps=10)
        raise KeyboardInterrupt

    arguments = ["signs", "--data", str(tmp_path), "--out", str(tmp_path)]
    assert cli.main(arguments, run=interrupted_job) == 130
    assert "resume" in capsys.readouterr().err
    assert read_status(tmp_path)["state"] == "failed"


def test_sigterm_stops_a_job_like_an_interrupt(tmp_path: Path, capsys) -> None:
    def terminated_job(job: str, arguments: argparse.Namespace, progress: JobProgress) -> Path:
        progress.start_epoch(1, 3, steps=10)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not stop the job")

    before = signal.getsignal(signal.SIGTERM)
    arguments = ["malaria", "--data", str(tmp_path), "--out", str(tmp_path)]
    assert cli.main(arguments, run=terminated_job) == 130
    assert "resume" in capsys.readouterr().err
    status = read_status(tmp_path)
    assert (status["job"], status["state"]) == ("malaria", "failed")
    assert signal.getsignal(signal.SIGTERM) is before  # restored for the caller


def test_malaria_under_multi_worker_config_is_a_one_line_error(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Keras 3 fit() cannot run under MultiWorkerMirroredStrategy: say so before any work."""
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"index": 0}}))
    assert cli.main(["malaria", "--data", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: the autoencoder trains with Keras fit()")
    assert "unset TF_CONFIG" in line
    assert not (tmp_path / "m").exists()


def test_init_from_with_a_cell_job_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    arguments = ["malaria", "--out", str(tmp_path), "--init-from", str(tmp_path)]
    assert cli.main(arguments) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --init-from starts the classifier (signs), not malaria"
    )


def test_the_command_line_becomes_one_options_object_for_every_job(tmp_path: Path) -> None:
    arguments = cli.build_parser().parse_args(
        ["all", "--data", str(tmp_path), "--out", "m", "--seed", "3", "--epochs", "2", "--quick"]
    )
    assert cli.job_options(arguments) == JobOptions(
        data=tmp_path, out=Path("m"), seed=3, quick=True, epochs=2, image_size=None
    )
    defaults = cli.job_options(cli.build_parser().parse_args(["signs"]))
    assert defaults.data == cli.default_data_root() and defaults.out == Path("models")
    with pytest.raises(ValueError, match="--epochs must be at least 1, got 0"):
        JobOptions(epochs=0)
