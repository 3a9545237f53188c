"""The report folder each training run leaves beside its model (``<version>/report/``).

Only plain files directly inside it, with a safe name and a known type, are ever listed or
served: a requested name is looked up in that listing, never joined onto a path, so no
name can reach outside the folder.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path

REPORT_FOLDER = "report"
CONTENT_TYPES = {".png": "image/png", ".json": "application/json"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ReportFile:
    name: str
    path: Path
    content_type: str
    size: int


def list_report(version_folder: Path) -> list[ReportFile]:
    """The servable files of a version's report, sorted by name (empty without a report)."""
    folder = version_folder / REPORT_FOLDER
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    files = []
    for entry in entries:
        content_type = CONTENT_TYPES.get(entry.suffix.lower())
        if content_type is None or not _SAFE_NAME.match(entry.name):
            continue
        try:
            info = entry.lstat()  # lstat: a symlink is never followed out of the folder
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            files.append(ReportFile(entry.name, entry, content_type, info.st_size))
    return sorted(files, key=lambda item: item.name)


def find_report_file(version_folder: Path, name: str) -> ReportFile | None:
    """The listed file called exactly ``name``, or None."""
    return next((item for item in list_report(version_folder) if item.name == name), None)
