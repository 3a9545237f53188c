"""A peer's venv is reused while its requirement list is unchanged and rebuilt otherwise;
nothing here installs a peer (pip is replaced by a recorder)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks.peers import venvs
from benchmarks.peers.venvs import MARKER, venv_python, venv_size_mib


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(command)
        if command[1:3] == ["-m", "venv"]:
            python = Path(command[3]) / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.write_text("")
        return subprocess.CompletedProcess(command, 0)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorded = Recorder()
    monkeypatch.setattr(venvs.subprocess, "run", recorded)
    return recorded


def test_installs_once_then_reuses(recorder: Recorder, tmp_path: Path) -> None:
    python = venv_python("peer", ("a==1", "b<2"), tmp_path)
    assert python == tmp_path / "peer" / "venv" / "bin" / "python"
    assert recorder.calls[1][-2:] == ["a==1", "b<2"]
    assert (tmp_path / "peer" / MARKER).read_text() == "a==1\nb<2\n"
    assert venv_python("peer", ("a==1", "b<2"), tmp_path) == python
    assert len(recorder.calls) == 2


def test_a_changed_list_rebuilds_from_scratch(recorder: Recorder, tmp_path: Path) -> None:
    venv_python("peer", ("a==1",), tmp_path)
    stale = tmp_path / "peer" / "venv" / "stale-file"
    stale.write_text("left over")
    venv_python("peer", ("a==2",), tmp_path)
    assert not stale.exists()
    assert recorder.calls[-1][-1] == "a==2"
    assert (tmp_path / "peer" / MARKER).read_text() == "a==2\n"


def test_an_interrupted_install_is_redone(recorder: Recorder, tmp_path: Path) -> None:
    venv_python("peer", ("a==1",), tmp_path)
    (tmp_path / "peer" / MARKER).unlink()  # as if pip had been stopped halfway
    venv_python("peer", ("a==1",), tmp_path)
    assert len(recorder.calls) == 4


def test_size_of_a_missing_venv_is_zero(tmp_path: Path) -> None:
    assert venv_size_mib("nothing", tmp_path) == 0.0
