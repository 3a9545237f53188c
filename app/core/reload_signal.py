"""Tell every worker process of one server to look for new model versions now.

``POST /admin/reload`` reaches one worker; that worker reloads and writes a fresh token into
a file in the folder the workers share, and every worker's watch loop (a stat and a 32-byte
read every ``CHECK_INTERVAL_S``) reloads when the token changes. A file instead of a pipe
or signal: no process needs to know the others, and a worker started later joins by itself.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

CHECK_INTERVAL_S = 0.5


class ReloadSignal:
    def __init__(self, runtime_dir: Path) -> None:
        self.path = runtime_dir / "reload-token"
        self._seen = self._read()

    def _read(self) -> str:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return ""

    def send(self) -> None:
        """Write a new token atomically (no worker ever reads half of one); the sender
        counts it as seen, since it has just reloaded."""
        token = secrets.token_hex(16)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        partial.write_text(token)
        os.replace(partial, self.path)
        self._seen = token

    def received(self) -> bool:
        """True once per token written by another worker since the last call."""
        token = self._read()
        if token == self._seen:
            return False
        self._seen = token
        return True
