"""``<models>/.training-status.json``: what a training run writing into a models folder is
doing, for the server beside it to show (``/readyz``, 503 details, the page).

The training CLI replaces the file atomically every few seconds; the server only reads it.
Fields (a JSON object): ``job`` (signs | malaria | index), ``state`` (training | done |
failed), ``epoch``/``epochs`` (1-based, 0 before the first epoch), ``step``/``steps`` (within
the epoch), ``eta_s`` (seconds left for this job, null until a rate is known), ``pending``
(jobs of this run still to come), ``started``/``updated`` (Unix seconds), ``message`` (one
plain line), ``pid`` (the writer).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from contract.layout import AUTOENCODER, CLASSIFIER, INDEX

STATUS_FILE = ".training-status.json"
STATES = ("training", "done", "failed")


def status_path(out_dir: Path) -> Path:
    return Path(out_dir) / STATUS_FILE


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Write ``status`` as JSON through a temporary file in the same folder and
    ``os.replace``, so readers see the old or the new file, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(status, file)
        # mkstemp makes it 0600, which would hide it from a server running as another user.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_status(out_dir: Path) -> dict[str, Any] | None:
    """The last status a training run wrote under ``out_dir``; None when there is none."""
    try:
        status = json.loads(status_path(out_dir).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("state") in STATES else None


# The model each training job exports.
JOB_MODELS = {"signs": CLASSIFIER, "malaria": AUTOENCODER, "index": INDEX}
# A run updates the file every few seconds; one silent this long may have been killed.
STALE_AFTER_S = 120.0


def training_message(
    status: dict[str, Any] | None, model: str, now: float | None = None
) -> str | None:
    """One plain line on ``model`` from a run's status: still training (epoch, time left),
    waiting for an earlier job, or failed; None when the run has nothing to say about it."""
    if status is None or status.get("state") == "done":
        return None
    job = str(status.get("job"))
    pending = [JOB_MODELS.get(name) for name in status.get("pending") or []]
    if JOB_MODELS.get(job) != model and model not in pending:
        return None
    if status["state"] == "failed":
        return f"training {job} failed: {status.get('message') or 'see the training log'}"
    if JOB_MODELS.get(job) != model:
        return f"waiting to be trained (training {job} first)"
    eta = status.get("eta_s")
    left = ""
    if isinstance(eta, int | float):
        left = (
            f", about {round(eta / 60)} min left" if eta >= 90 else f", about {round(eta)} s left"
        )
    if status.get("epochs") or not status.get("message"):
        phase = f"{job} epoch {status.get('epoch', 0)}/{status.get('epochs', '?')}"
    else:  # before the first epoch (loading data): the phase's own words
        phase = str(status["message"])
    message = f"still training: {phase}{left}"
    updated = status.get("updated")
    now = time.time() if now is None else now
    if isinstance(updated, int | float) and now - updated > STALE_AFTER_S:
        message += f" (no update for {round(now - updated)} s: is the run still going?)"
    return message
