"""Command-line argument types that both sides' command lines share.

The client (``app/client.py``), the training CLI (``training/cli.py``) and the benchmarks
parse counts the same way, and ``app/`` and ``training/`` may only share code through this
package. Standard library only: the client installs without the server's dependencies.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1, refused with a usage message (exit 2)
    before any work starts or any request is sent."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
