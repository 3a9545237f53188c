"""Version folders, and the contract's promise to import neither side nor TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from contract.layout import versions
from tests.paths import REPO_ROOT


def test_versions_are_numeric_folders_oldest_first(tmp_path: Path) -> None:
    for name in ("1", "10", "2", ".tmp-3-123", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert versions(tmp_path) == [1, 2, 10]
    assert versions(tmp_path / "missing") == []


def test_the_contract_imports_neither_training_nor_app_nor_tensorflow() -> None:
    modules = (
        "contract.arguments, contract.layout, contract.metadata, contract.pixels,"
        " contract.signatures, contract.training_status"
    )
    check = (
        f"import sys, {modules}\n"
        "roots = {name.split('.')[0] for name in sys.modules}\n"
        "print(sorted(roots & {'app', 'training', 'tensorflow', 'keras', 'fastapi'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
