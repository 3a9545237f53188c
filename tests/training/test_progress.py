"""Training progress: log lines off a terminal, a bar on one, and the atomic status file."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from contract.training_status import STATUS_FILE, read_status, status_path, write_status
from training.progress import JobProgress

FIELDS = {"job", "state", "epoch", "epochs", "step", "steps", "eta_s", "started", "updated"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _progress(tmp_path: Path, clock: FakeClock, **options) -> JobProgress:
    return JobProgress(
        "malaria",
        status_path(tmp_path),
        pending=["index"],
        interval_s=5.0,
        terminal=False,
        clock=clock,
        wall_clock=lambda: 1000.0 + clock.now,
        **options,
    )


def _status(tmp_path: Path) -> dict:
    return json.loads((tmp_path / STATUS_FILE).read_text())


def test_off_a_terminal_a_line_every_interval_with_rate_and_time_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="training.progress")
    clock = FakeClock()
    progress = _progress(tmp_path, clock)
    progress.start_epoch(1, 2, steps=20)
    for _ in range(20):
        clock.now += 1.0  # one step per second
        progress.advance(loss=0.5)
        status = _status(tmp_path)  # valid JSON after every update
        assert set(status) >= FIELDS and status["state"] == "training"
    lines = [r.getMessage() for r in caplog.records if "step " in r.getMessage()]
    assert len(lines) == 4  # at 5, 10, 15 and 20 seconds
    assert lines[0] == (
        "malaria epoch 1/2: step 5/20 (25%), 1.00 steps/s, epoch left 15 s, job left 35 s, loss 0.5"
    )
    assert _status(tmp_path)["eta_s"] == 20.0  # the second epoch at the same rate
    progress.end_epoch("loss 0.5")
    assert "malaria epoch 1/2: loss 0.5 (20 s)" in caplog.messages


def test_time_left_uses_finished_epochs_length(tmp_path: Path) -> None:
    clock = FakeClock()
    progress = _progress(tmp_path, clock)
    progress.start_epoch(1, 3, steps=10)
    clock.now += 30.0  # ten steps, then validation: the epoch took 30 s in all
    progress.advance(10)
    progress.end_epoch("done")
    progress.start_epoch(2, 3, steps=10)
    clock.now += 5.0
    progress.advance(5)
    assert progress.eta_s() == pytest.approx(5.0 + 30.0)
    assert _status(tmp_path)["epoch"] == 2


def test_done_and_failed_end_the_status(tmp_path: Path) -> None:
    clock = FakeClock()
    progress = _progress(tmp_path, clock)
    progress.note("exporting")
    assert _status(tmp_path)["message"] == "malaria: exporting"
    progress.done("report /x")
    status = _status(tmp_path)
    assert status["state"] == "done" and status["eta_s"] == 0.0
    assert status["pending"] == ["index"] and status["started"] == 1000.0
    progress.failed("malaria: boom")
    assert read_status(tmp_path)["state"] == "failed"


def test_on_a_terminal_a_bar_and_no_log_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="training.progress")
    stream = io.StringIO()
    clock = FakeClock()
    progress = JobProgress(
        "signs", status_path(tmp_path), terminal=True, stream=stream, clock=clock, interval_s=0
    )
    progress.start_epoch(1, 1, steps=4)
    for _ in range(4):
        clock.now += 1.0
        progress.advance(loss=1.0)
    progress.end_epoch("loss 1.0")
    assert "signs epoch 1/1" in stream.getvalue() and "/4 [" in stream.getvalue()
    assert not [message for message in caplog.messages if "steps/s" in message]
    assert _status(tmp_path)["step"] == 4


def test_status_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "out" / STATUS_FILE
    for step in range(3):
        write_status(path, {"state": "training", "step": step})
    assert json.loads(path.read_text())["step"] == 2
    assert [p.name for p in path.parent.iterdir()] == [STATUS_FILE]


@pytest.mark.parametrize("content", [None, "not json", '{"state": "sleeping"}', "[1]"])
def test_read_status_ignores_missing_or_foreign_files(tmp_path: Path, content) -> None:
    if content is not None:
        (tmp_path / STATUS_FILE).write_text(content)
    assert read_status(tmp_path) is None
