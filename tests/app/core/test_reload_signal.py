"""The reload signal: a token file that each worker process notices once per change."""

from __future__ import annotations

from pathlib import Path

from app.core.reload_signal import ReloadSignal


def test_a_token_sent_by_one_worker_is_received_once_by_each_other(tmp_path: Path) -> None:
    sender, first, second = (ReloadSignal(tmp_path) for _ in range(3))
    assert not first.received()
    sender.send()
    assert not sender.received()  # the sender has reloaded already
    assert first.received() and second.received()
    assert not first.received() and not second.received()
    first.send()
    assert sender.received() and second.received() and not first.received()
    assert [path.name for path in tmp_path.iterdir()] == ["reload-token"]


def test_a_worker_started_after_a_signal_does_not_replay_it(tmp_path: Path) -> None:
    ReloadSignal(tmp_path).send()
    assert not ReloadSignal(tmp_path).received()
