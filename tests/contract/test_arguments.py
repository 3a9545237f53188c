"""The argument types both sides' command lines share."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from contract.arguments import positive_int
from tests.paths import REPO_ROOT


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("42", 42), (" 7 ", 7)])
def test_positive_int_takes_whole_numbers_of_at_least_one(text: str, value: int) -> None:
    assert positive_int(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "must be at least 1, got 0"),
        ("-3", "must be at least 1, got -3"),
        ("x", "must be a whole number, got 'x'"),
        ("2.5", "must be a whole number, got '2.5'"),
        ("", "must be a whole number, got ''"),
    ],
)
def test_positive_int_refuses_anything_else_with_a_usage_message(
    text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--count", type=positive_int)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--count", text])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"tool: error: argument --count: {message}"
    )


def test_the_arguments_module_needs_only_the_standard_library() -> None:
    """The client imports it, and the client installs without the server's dependencies."""
    check = (
        "import sys, contract.arguments\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'pydantic', 'numpy'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
