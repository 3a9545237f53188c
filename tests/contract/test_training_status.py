"""The training status file: written atomically, read back, and turned into one line per model."""

from __future__ import annotations

from pathlib import Path

from contract.layout import AUTOENCODER, CLASSIFIER, INDEX
from contract.training_status import (
    STALE_AFTER_S,
    read_status,
    status_path,
    training_message,
    write_status,
)

NOW = 1_000_000.0
MALARIA = {
    "job": "malaria",
    "state": "training",
    "epoch": 3,
    "epochs": 8,
    "eta_s": 300.0,
    "pending": ["index"],
    "updated": NOW - 2,
}


def test_written_status_reads_back(tmp_path: Path) -> None:
    write_status(status_path(tmp_path), MALARIA)
    assert read_status(tmp_path) == MALARIA
    assert [path.name for path in tmp_path.iterdir()] == [status_path(tmp_path).name]


def test_missing_or_damaged_status_reads_as_none(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    status_path(tmp_path).write_text('{"job": "malaria", "state": "trai')
    assert read_status(tmp_path) is None


def test_the_model_in_training_gets_epoch_and_time_left() -> None:
    assert training_message(MALARIA, AUTOENCODER, NOW) == (
        "still training: malaria epoch 3/8, about 5 min left"
    )
    almost = {**MALARIA, "eta_s": 29.6}
    assert training_message(almost, AUTOENCODER, NOW) == (
        "still training: malaria epoch 3/8, about 30 s left"
    )


def test_before_the_first_epoch_the_phase_is_named() -> None:
    loading = {
        **MALARIA,
        "epoch": 0,
        "epochs": 0,
        "eta_s": None,
        "message": "malaria: loading cells",
    }
    assert training_message(loading, AUTOENCODER, NOW) == "still training: malaria: loading cells"


def test_a_pending_model_waits_and_a_finished_one_is_not_mentioned() -> None:
    assert training_message(MALARIA, INDEX, NOW) == "waiting to be trained (training malaria first)"
    assert training_message(MALARIA, CLASSIFIER, NOW) is None
    assert training_message({**MALARIA, "state": "done"}, AUTOENCODER, NOW) is None
    assert training_message(None, AUTOENCODER, NOW) is None


def test_failure_and_a_silent_run_are_said_plainly() -> None:
    failed = {**MALARIA, "state": "failed", "message": "interrupted"}
    assert training_message(failed, INDEX, NOW) == "training malaria failed: interrupted"
    silent = {**MALARIA, "updated": NOW - STALE_AFTER_S - 10}
    message = training_message(silent, AUTOENCODER, NOW)
    assert message is not None and "is the run still going?" in message
