"""wrk, the compiled load generator, as the HTTP benchmarks drive it: one fixed request
body per run (a Lua script loads it once), its report parsed, its own CPU measured.

wrk's own CPU must stay a few percent of a core, or it competes with the server it loads.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONNECTIONS = 32  # enough to keep every batcher busy
# wrk's default (2 s) drops slow answers from the latency figures instead of counting them.
WRK_TIMEOUT_S = 30
_LUA = """
local file = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
"""


def wrk_missing() -> bool:
    """True, after saying so on stderr, when the wrk binary is not installed."""
    if shutil.which("wrk") is not None:
        return False
    print("wrk is not installed (scripts/install-wrk.sh)", file=sys.stderr)
    return True


def write_script(work: Path, name: str, body: bytes, headers: Mapping[str, str]) -> Path:
    """A Lua script that makes wrk POST ``body`` with ``headers``; files named ``name``."""
    body_path = work / f"{name}.body"
    body_path.write_bytes(body)
    lines = [_LUA.format(body=body_path)]
    lines += [f'wrk.headers["{key}"] = "{value}"\n' for key, value in headers.items()]
    script = work / f"{name}.lua"
    script.write_text("".join(lines))
    return script


def run_wrk(
    url: str, script: Path, duration_s: float, connections: int = CONNECTIONS
) -> dict[str, Any]:
    """One wrk run; its own CPU from the rusage of waited-for children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
    command += ["--timeout", f"{WRK_TIMEOUT_S}s", "-s", str(script)]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=duration_s + 60
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**parse_wrk(output), "wrk_cpu_s": wrk_cpu_s}


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests, req/s, p50/p99 (ms) and failures from wrk's ``--latency`` report."""
    requests = int(_first_group(r"(\d+) requests in", output))
    rps = float(_first_group(r"Requests/sec:\s+([\d.]+)", output))
    percentiles = re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    latency = {percent: _ms(value, unit) for percent, value, unit in percentiles}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests": requests,
        "rps": rps,
        "p50_ms": latency.get("50"),
        "p99_ms": latency.get("99"),
        "failed": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def _first_group(pattern: str, output: str) -> str:
    """What ``pattern``'s group matched in wrk's report, which always prints it."""
    found = re.search(pattern, output)
    if found is None:
        raise ValueError(f"wrk's report has no {pattern!r}:\n{output[-2000:]}")
    return found.group(1)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
