"""Progress of a training run, for a person watching and for the server.

Within an epoch a person sees a tqdm bar on a terminal, or a plain log line every few
seconds when the output is a file or pipe (``docker logs``, CI): step, rate and time left.
The same figures go to ``<out>/.training-status.json`` (replaced atomically, so a reader
never sees half a file; fields in ``contract.training_status``), which the server reads to
say what is still training.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from contract.training_status import write_status

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


class JobProgress:
    """One job's progress: epochs of steps, shown and written to the status file.

    ``status_file`` None: show progress, write no file (a job called from Python).
    ``terminal`` None: a bar when ``stream`` is a TTY, log lines otherwise.
    """

    def __init__(
        self,
        job: str,
        status_file: Path | None = None,
        *,
        pending: Sequence[str] = (),
        interval_s: float = DEFAULT_INTERVAL_S,
        terminal: bool | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.job = job
        self.status_file = status_file
        self.pending = list(pending)
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.clock = clock
        self.wall_clock = wall_clock
        self.started = wall_clock()
        self.epoch = self.epochs = self.step = self.steps = 0
        self._epoch_started = self._last_shown = clock()
        self._finished_epoch_seconds: list[float] = []
        self._metrics = ""
        self._bar: tqdm | None = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, description: str = "") -> None:
        """``epoch`` is 1-based; ``description`` names the phase (default: epoch n/N)."""
        self.epoch, self.epochs, self.step, self.steps = epoch, epochs, 0, steps
        self._epoch_started = self._last_shown = self.clock()
        self._metrics = ""
        self._label = description or f"{self.job} epoch {epoch}/{epochs}"
        if self.terminal:
            self._bar = tqdm(
                total=steps, desc=self._label, unit="step", leave=False, file=self.stream
            )
        self._write("training", f"{self._label}: started")

    def advance(self, steps: int = 1, **metrics: float) -> None:
        """``steps`` more steps done; ``metrics`` (e.g. loss) are shown beside the rate."""
        self.step += steps
        self._metrics = " ".join(f"{key} {value:.4g}" for key, value in metrics.items())
        if self._bar is not None:
            self._bar.update(steps)
            if metrics:
                self._bar.set_postfix_str(self._metrics, refresh=False)
        now = self.clock()
        if now - self._last_shown < self.interval_s and self.step < self.steps:
            return
        self._last_shown = now
        line = self._progress_line()
        if self._bar is None:
            log.info("%s", line)
        self._write("training", line)

    def end_epoch(self, summary: str) -> None:
        """Close the epoch's bar and log its one-line summary (losses, validation)."""
        self._finished_epoch_seconds.append(self.clock() - self._epoch_started)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        message = f"{self.job} epoch {self.epoch}/{self.epochs}: {summary}"
        log.info("%s (%s)", message, format_seconds(self._finished_epoch_seconds[-1]))
        self.step = self.steps
        self._write("training", message)

    def note(self, message: str) -> None:
        """A phase without steps (evaluating, exporting): logged and recorded."""
        self._close_bar()
        log.info("%s: %s", self.job, message)
        self._write("training", f"{self.job}: {message}", eta_s=None)

    def done(self, message: str) -> None:
        self._close_bar()
        self._write("done", message, eta_s=0.0)

    def failed(self, message: str) -> None:
        """Record the failure, unless it came before the output folder existed (a bad
        argument or environment): no folder is made just to say so."""
        self._close_bar()
        if self.status_file is not None and self.status_file.parent.is_dir():
            self._write("failed", message, eta_s=None)

    def eta_s(self) -> float | None:
        """Seconds left in this job: the rest of this epoch at its step rate, plus the epochs
        still to come at the mean finished epoch's length (validation included)."""
        elapsed = self.clock() - self._epoch_started
        if self.step <= 0 or elapsed <= 0:
            if not self._finished_epoch_seconds:
                return None
            epoch_left = self._mean_epoch_s()
        else:
            epoch_left = (self.steps - self.step) * elapsed / self.step
        later = max(0, self.epochs - self.epoch)
        if self._finished_epoch_seconds:
            per_epoch = self._mean_epoch_s()
        elif self.step > 0:
            per_epoch = self.steps * elapsed / self.step
        else:
            return None
        return epoch_left + later * per_epoch

    def _mean_epoch_s(self) -> float:
        return sum(self._finished_epoch_seconds) / len(self._finished_epoch_seconds)

    def _progress_line(self) -> str:
        elapsed = self.clock() - self._epoch_started
        rate = self.step / elapsed if elapsed > 0 else 0.0
        percent = 100 * self.step / self.steps if self.steps else 100
        epoch_left = (self.steps - self.step) / rate if rate > 0 else None
        parts = [
            f"{self._label}: step {self.step}/{self.steps} ({percent:.0f}%)",
            f"{rate:.2f} steps/s",
            f"epoch left {format_seconds(epoch_left)}",
            f"job left {format_seconds(self.eta_s())}",
        ]
        return ", ".join(parts) + (f", {self._metrics}" if self._metrics else "")

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write(self, state: str, message: str, **override: Any) -> None:
        if self.status_file is None:
            return
        eta = override.get("eta_s", self.eta_s() if state == "training" else None)
        status = {
            "job": self.job,
            "state": state,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "step": self.step,
            "steps": self.steps,
            "eta_s": None if eta is None else round(eta, 1),
            "pending": self.pending,
            "started": round(self.started, 3),
            "updated": round(self.wall_clock(), 3),
            "message": message,
            "pid": os.getpid(),
        }
        try:
            write_status(self.status_file, status)
        except OSError as error:  # a full or read-only disk must not stop the training
            log.warning("could not write %s: %s", self.status_file, error)
