"""The reload signal: a token file that each worker process notices once per change, and the
acknowledgements an admin call waits for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.reload_signal import ReloadSignal, check, live_workers, wait_for_workers


def test_a_token_is_received_once_by_every_worker_the_sender_included(tmp_path: Path) -> None:
    sender, first, second = (ReloadSignal(tmp_path, pid) for pid in (1, 2, 3))
    assert not first.received()
    sender.send()
    assert sender.received() and first.received() and second.received()
    assert not sender.received() and not first.received() and not second.received()
    first.send()
    second.send()  # before anyone looked: one reload covers both
    assert sender.received() and first.received() and second.received()
    assert not first.received()
    assert [path.name for path in tmp_path.iterdir()] == ["reload-token"]


def test_a_replaced_token_is_noticed_even_when_its_stat_looks_the_same(tmp_path: Path) -> None:
    """A new token file may reuse the inode of the one before, with the same size and, within
    the clock's granularity, the same modification time."""
    sender, follower = ReloadSignal(tmp_path, 1), ReloadSignal(tmp_path, 2)
    sender.send()
    assert follower.received()
    stat = sender.path.stat()
    sender.path.write_text("f" * stat.st_size)  # same inode and size
    os.utime(sender.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert follower.received()


def test_a_worker_started_after_a_signal_does_not_replay_it(tmp_path: Path) -> None:
    ReloadSignal(tmp_path).send()
    assert not ReloadSignal(tmp_path).received()


@pytest.fixture
def children() -> Iterator[list[int]]:
    """Two processes started by this one: the workers of a supervisor that is this test."""
    processes = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)
    ]
    yield [process.pid for process in processes]
    for process in processes:
        process.kill()
        process.wait()


def test_a_change_counts_as_confirmed_by_reloads_begun_after_it(
    tmp_path: Path, children: list[int]
) -> None:
    first, second = (ReloadSignal(tmp_path, pid) for pid in children)
    first.acknowledge(10.0, ok=True)
    second.acknowledge(10.0, ok=True)
    state = check(tmp_path, since=20.0, parent=os.getpid())
    assert (state.confirmed, state.pending, state.total) == ([], sorted(children), 2)
    first.acknowledge(20.0, ok=True)
    second.acknowledge(21.0, ok=False)
    state = check(tmp_path, since=20.0, parent=os.getpid())
    assert (state.confirmed, state.failed, state.pending) == ([first.pid], [second.pid], [])
    second.leave()
    assert list(live_workers(tmp_path, parent=os.getpid())) == [first.pid]


def test_workers_whose_process_is_gone_or_not_a_sibling_are_not_waited_for(
    tmp_path: Path, children: list[int]
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ReloadSignal(tmp_path, gone.pid).acknowledge(1.0, ok=True)
    ReloadSignal(tmp_path, os.getpid()).acknowledge(1.0, ok=True)  # not a child of itself
    worker = ReloadSignal(tmp_path, children[0])
    worker.acknowledge(time.monotonic(), ok=True)
    state = wait_for_workers(tmp_path, time.monotonic() - 1, timeout_s=60, parent=os.getpid())
    assert (state.confirmed, state.total) == ([worker.pid], 1)
    assert sorted(path.name for path in tmp_path.iterdir()) == [worker.ack_path.name]


def test_the_wait_ends_when_the_last_worker_acknowledges_or_at_the_timeout(
    tmp_path: Path, children: list[int]
) -> None:
    worker = ReloadSignal(tmp_path, children[0])
    worker.acknowledge(1.0, ok=True)
    since = time.monotonic()
    state = wait_for_workers(tmp_path, since, timeout_s=0.05, parent=os.getpid())
    assert (state.confirmed, state.pending) == ([], [worker.pid])
    worker.acknowledge(time.monotonic(), ok=True)
    state = wait_for_workers(tmp_path, since, timeout_s=60, parent=os.getpid())
    assert state.confirmed == [worker.pid]
