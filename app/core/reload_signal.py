"""Make one admin change hold in every worker process of a server before the admin call answers.

The worker processes of ``python -m app`` share a runtime folder (app/server.py). In it:

* ``reload-token``: rewritten (atomically) after every admin change. Each worker stats it
  every ``CHECK_INTERVAL_S`` and, when it changed, reloads from disk (new versions and
  ``labels.json``, where the admin change was written) - the worker that made the change too,
  so that it also picks up a change another worker made at the same moment.
* ``ack-<pid>``: one per worker that serves: the time (``time.monotonic``, one clock for
  every process of the machine) at which its last reload from disk began, and whether it
  succeeded. A worker writes it once its models are loaded and removes it when it stops.

A change persisted at time T is in force in a worker once that worker's acknowledged reload
began at T or later. ``wait_for_workers`` waits (bounded) until every live worker says so; a
worker whose process is gone is not waited for (a restarted one reads the persisted state
when it starts). Files instead of pipes or signals: no process needs to know the others, and
a worker started later joins by itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

# A stat per check on the event loop (about a microsecond), so checking often costs nothing
# measurable; it bounds how long an admin call waits for the other workers to start.
CHECK_INTERVAL_S = 0.1
# How long an admin call waits for the other workers beyond what the change took itself.
CONFIRM_TIMEOUT_S = 5.0
CONFIRM_TIMEOUT_CAP_S = 60.0
_WAIT_STEP_S = 0.01
# A token file younger than this is read even when its stat looks unchanged: a replaced
# file may get the inode of the one before, and the same coarse modification time.
_YOUNG_S = 2.0
_ACK = re.compile(r"ack-(\d+)")
_PROC = Path("/proc/self/stat").exists()


@dataclass(frozen=True)
class Confirmation:
    """Which live workers have the change in force (pids), which failed to reload, which
    had not answered when the wait ended."""

    confirmed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    waited_s: float = 0.0

    @property
    def total(self) -> int:
        return len(self.confirmed) + len(self.failed) + len(self.pending)


class ReloadSignal:
    """One worker's end: send a token, notice tokens, acknowledge reloads."""

    def __init__(self, runtime_dir: Path, pid: int | None = None) -> None:
        self.runtime_dir = runtime_dir
        self.path = runtime_dir / "reload-token"
        self.pid = os.getpid() if pid is None else pid
        self.ack_path = runtime_dir / f"ack-{self.pid}"
        self._stat_key = self._stat()
        self._seen = self._read()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _read(self) -> str:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return ""

    def send(self) -> None:
        """Write a new token atomically (no worker ever reads half of one). The sender gets
        it as well: its own reload then also covers a change persisted meanwhile by another
        worker, whose token this one replaces."""
        _write_atomically(self.path, secrets.token_hex(16), self.pid)

    def received(self) -> bool:
        """True once per token change since the last call. A stat when nothing changed (cheap
        enough for the event loop); the 32-byte read only when the stat differs or the file
        is young."""
        key = self._stat()
        if key == self._stat_key and (key is None or time.time() - key[1] / 1e9 > _YOUNG_S):
            return False
        self._stat_key = key
        token = self._read()
        if token == self._seen:
            return False
        self._seen = token
        return True

    def acknowledge(self, reload_began: float, ok: bool) -> None:
        """Say that this worker's state reflects the disk as of ``reload_began``
        (``time.monotonic()`` taken before the reload read anything), or that the reload
        failed."""
        _write_atomically(self.ack_path, f"{reload_began!r} {'ok' if ok else 'failed'}", self.pid)

    def leave(self) -> None:
        """This worker stops serving: no admin call waits for it any more."""
        with contextlib.suppress(FileNotFoundError):
            self.ack_path.unlink()


def live_workers(runtime_dir: Path, parent: int | None = None) -> dict[int, tuple[float, bool]]:
    """Every live worker that serves: pid -> (when its last reload began, succeeded). A
    worker is a child of ``parent`` (by default this process's parent, the supervisor):
    the acknowledgement of a dead worker whose pid another process got since is ignored,
    and removed."""
    parent = os.getppid() if parent is None else parent
    workers = {}
    for path in runtime_dir.iterdir():
        match = _ACK.fullmatch(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            began, _, outcome = path.read_text().partition(" ")
            acknowledged = float(began), outcome == "ok"
        except (FileNotFoundError, ValueError):
            continue  # gone meanwhile, or written by something else
        if _alive(pid, parent):
            workers[pid] = acknowledged
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return workers


def check(runtime_dir: Path, since: float, parent: int | None = None) -> Confirmation:
    """Where every live worker stands on a change persisted at ``since``."""
    confirmed, failed, pending = [], [], []
    for pid, (began, ok) in sorted(live_workers(runtime_dir, parent).items()):
        if began < since:
            pending.append(pid)
        elif ok:
            confirmed.append(pid)
        else:
            failed.append(pid)
    return Confirmation(confirmed, failed, pending)


def wait_for_workers(
    runtime_dir: Path, since: float, timeout_s: float, parent: int | None = None
) -> Confirmation:
    """Block (in a worker thread) until every live worker has reloaded since ``since`` or
    ``timeout_s`` has passed; returns where they stand then."""
    start = time.monotonic()
    while True:
        state = check(runtime_dir, since, parent)
        waited = time.monotonic() - start
        if not state.pending or waited >= timeout_s:
            return Confirmation(state.confirmed, state.failed, state.pending, round(waited, 3))
        time.sleep(_WAIT_STEP_S)


def confirm_timeout_s(change_took_s: float) -> float:
    """The other workers do what this one did (load the same versions): wait for twice
    that, plus ``CONFIRM_TIMEOUT_S``, at most ``CONFIRM_TIMEOUT_CAP_S``."""
    return min(CONFIRM_TIMEOUT_CAP_S, CONFIRM_TIMEOUT_S + 2 * change_took_s)


def _write_atomically(path: Path, text: str, pid: int) -> None:
    partial = path.with_name(f".{path.name}.{pid}")
    partial.write_text(text)
    os.replace(partial, path)


def _alive(pid: int, parent: int) -> bool:
    """Whether ``pid`` runs as a child of ``parent`` (a zombie, dead but not yet reaped by
    the supervisor, does not run). Without /proc: whether the pid exists."""
    if _PROC:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return False
        return fields[0] != "Z" and fields[1] == str(parent)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
