"""``python -m benchmarks.peers --models DIR [--data DIR] [--peers cellsign,pytriton,...]
[--parallel 1,2] [--duration S] [--warmup S] [--rounds N] [--out FILE]``

The same SIGNS SavedModel and the same JPEG behind cellsign and behind other model servers,
each loaded by wrk (``-t1 -c32``) with the request its users would send. Servers run one at
a time and alternate round by round (a change in the machine's other load then hits all of
them alike); each is checked with one real request before it is measured, warmed, then
measured; the table holds the median over rounds. Beside req/s and p99: the server's CPU
per request (all its processes) and wrk's own CPU. Peers are installed on first use into
their own venvs (``benchmarks/peers/venvs.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from subprocess import SubprocessError
from typing import Any

import httpx
import numpy as np

from benchmarks import REPO_ROOT
from benchmarks.environment import machine_description
from benchmarks.payloads import signs_paths
from benchmarks.peers.catalog import CELLSIGN, PEERS, Config
from benchmarks.peers.peer_server import PeerServer, send
from benchmarks.peers.report import markdown, medians
from benchmarks.peers.requests import PeerRequest
from benchmarks.peers.venvs import VENVS_ROOT, venv_python, venv_size_mib
from benchmarks.servers import WorkersServer
from benchmarks.wrk import CONNECTIONS, WRK_TIMEOUT_S, run_wrk, write_script, wrk_missing
from contract.arguments import positive_int

# The same model and decoder in another TensorFlow build: equal to float32 rounding.
PROBABILITY_TOLERANCE = 1e-4


def rotated(configs: list[Config], by: int) -> list[Config]:
    """Each round starts one server later, so none always runs first (or last)."""
    by %= max(len(configs), 1)
    return configs[by:] + configs[:by]


class WrongAnswerError(RuntimeError):
    """A server answered something else than the model gives in-process."""


def check_answer(request: PeerRequest, response: httpx.Response, expected: np.ndarray) -> None:
    """Raise unless the server answered this image's probabilities (same class, same values
    within float rounding)."""
    got = request.probabilities(response)
    if got.shape != expected.shape or not np.allclose(got, expected, atol=PROBABILITY_TOLERANCE):
        raise WrongAnswerError(f"{request.kind} to {request.path}: {got}, not {expected}")
    if int(np.argmax(got)) != int(np.argmax(expected)):
        raise WrongAnswerError(f"{request.kind} to {request.path}: class {np.argmax(got)}")


def measure(
    config: Config,
    python: Path | None,
    models: Path,
    image: bytes,
    expected: np.ndarray,
    timing: tuple[int, int],
    work: Path,
    round_: int,
) -> list[dict[str, Any]]:
    """Start ``config``'s server alone, check every request kind once, then time each."""
    warmup_s, duration_s = timing
    requests = config.peer.requests(image)
    log = work / f"{config.label}-{round_}.log"
    if python is None:
        server: WorkersServer | PeerServer = WorkersServer(models, config.parallel, log)
    else:
        server = PeerServer(python, config, models, requests[0], log)
    rows = []
    with server:
        for request in requests:
            check_answer(request, send(server.base_url, request), expected)
        for index, request in enumerate(requests):
            script = write_script(work, f"{config.label}-{index}", request.body, request.headers)
            url = server.base_url + request.path
            run_wrk(url, script, warmup_s)
            load = os.getloadavg()[0]
            cpu_before = server.cpu_seconds()
            result = run_wrk(url, script, duration_s)
            server_cpu_s = server.cpu_seconds() - cpu_before
            rows.append(
                {
                    "peer": config.peer.name,
                    "parallel": config.parallel,
                    "request": request.kind,
                    "round": round_,
                    **result,
                    "server_cores": server_cpu_s / duration_s,
                    "server_core_ms_per_request": server_cpu_s * 1000 / max(result["requests"], 1),
                    "wrk_core_percent": result["wrk_cpu_s"] / duration_s * 100,
                    "load_average": load,
                }
            )
    return rows


def installed_versions(python: Path, packages: Sequence[str]) -> dict[str, str]:
    """Versions of ``packages`` as installed in the venv of ``python``."""
    script = (
        "import importlib.metadata as m, json, sys\n"
        "print(json.dumps({name: m.version(name) for name in sys.argv[1:]}))"
    )
    completed = subprocess.run(
        [str(python), "-c", script, *packages], capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout)


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PEERS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {','.join(PEERS)}; got {text!r}")
    return names


def _counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"comma-separated counts >= 1, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", type=Path, required=True, help="models folder")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--peers", type=_names, default=list(PEERS), help=",".join(PEERS))
    parser.add_argument(
        "--parallel", type=_counts, default=[1, 2], help="processes/instances/replicas, e.g. 1,2"
    )
    # wrk takes whole seconds
    parser.add_argument("--duration", type=positive_int, default=15, help="seconds per wrk run")
    parser.add_argument("--warmup", type=positive_int, default=3, help="seconds of wrk before each")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the servers")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/peers_results.md"))
    parser.add_argument("--venvs", type=Path, default=VENVS_ROOT, help="where peers install")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if wrk_missing():
        return 1
    if arguments.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 1
    try:
        (image_path,) = signs_paths(arguments.data, 1)
    except FileNotFoundError as error:
        print(f"{error} (--data)", file=sys.stderr)
        return 1
    models = arguments.models.resolve()
    pythons, versions = install(arguments.peers, arguments.venvs)
    machine = machine_description()
    started = time.monotonic()
    image = image_path.read_bytes()
    expected = _reference(models, image)
    rows, problems = run_rounds(arguments, models, image, expected, pythons)
    elapsed = time.monotonic() - started
    context = {
        "summary": (
            f"Median of {arguments.rounds} round(s). 'server core-ms/req': CPU time of all the "
            "server's processes per answered request; 'vs best peer': req/s over the best "
            "non-cellsign row."
        ),
        "versions": versions,
        "rounds": rows,
        "problems": problems,
        "conditions": conditions(arguments, machine, versions, image_path, expected, elapsed),
    }
    arguments.out.write_text(markdown(medians(rows), context))
    print(arguments.out.read_text())
    return 1 if problems else 0


def install(
    names: list[str], venvs: Path
) -> tuple[dict[str, Path | None], dict[str, dict[str, str]]]:
    """Each peer's interpreter (its venv installed if needed) and what is installed in it."""
    pythons: dict[str, Path | None] = {CELLSIGN: None}
    versions = {CELLSIGN: {"cellsign": _cellsign_version()}}
    for name in names:
        if name != CELLSIGN:
            python = venv_python(name, PEERS[name].requirements, venvs)
            pythons[name] = python
            packages = (PEERS[name].package, "tensorflow-cpu", "pillow", "numpy")
            versions[name] = installed_versions(python, packages)
    return pythons, versions


def run_rounds(
    arguments: argparse.Namespace,
    models: Path,
    image: bytes,
    expected: np.ndarray,
    pythons: dict[str, Path | None],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every configuration once per round, one server at a time. A server that fails to
    start or answers wrongly is reported and skipped in that round; the rest still run."""
    configs = [Config(PEERS[name], n) for name in arguments.peers for n in arguments.parallel]
    timing = (arguments.warmup, arguments.duration)
    rows: list[dict[str, Any]] = []
    problems = []
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as work:
        for round_ in range(1, arguments.rounds + 1):
            for config in rotated(configs, round_ - 1):
                print(f"round {round_}: {config.label}", flush=True)
                python = pythons[config.peer.name]
                try:
                    rows += measure(
                        config, python, models, image, expected, timing, Path(work), round_
                    )
                except (
                    AssertionError,
                    RuntimeError,
                    OSError,
                    SubprocessError,
                    httpx.HTTPError,
                ) as error:
                    problem = f"round {round_}, {config.label}: {str(error)[:500]}"
                    print(problem, file=sys.stderr, flush=True)
                    problems.append(problem)
    return rows, problems


def conditions(
    arguments: argparse.Namespace,
    machine: dict[str, Any],
    versions: dict[str, dict[str, str]],
    image_path: Path,
    expected: np.ndarray,
    elapsed: float,
) -> dict[str, str]:
    """What the figures depend on, for the lines under the table."""
    cores = f"{machine['cpu_count']} cores ({len(os.sched_getaffinity(0))} usable)"
    described = {
        "date (UTC)": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
        "machine": f"{cores}, {machine['processor']}, {machine['memory_gib']} GiB",
        "load average (1, 5, 15 min) at start / end": (
            f"{_loads(machine['load_average_at_start'])} / {_loads(os.getloadavg())}"
        ),
        "Python": machine["python"],
        "cellsign": f"commit {machine['git']}, tensorflow {machine['versions']['tensorflow']}",
    }
    for name, found in versions.items():
        if name != CELLSIGN:
            size = venv_size_mib(name, arguments.venvs)
            installed = ", ".join(f"{package} {version}" for package, version in found.items())
            described[f"{PEERS[name].title} venv"] = f"{installed} ({size:.0f} MiB)"
    described["load"] = (
        f"{_wrk_version()}: -t1 -c{CONNECTIONS} --timeout {WRK_TIMEOUT_S}s, "
        f"{arguments.warmup} s warm-up then {arguments.duration} s measured per row, "
        f"{arguments.rounds} round(s), one server up at a time, servers alternating (each "
        "round starting one later)"
    )
    size = image_path.stat().st_size
    label = image_path.name.split("_")[0]
    described["image"] = f"{image_path.name}, {size} bytes, class {label} in the data"
    described["model"] = (
        f"{arguments.models}, newest signs_classifier version, class "
        f"{int(np.argmax(expected))} for this image in-process; every server was checked to "
        "answer the same probabilities (one real request) before it was measured"
    )
    described["wall time"] = f"{elapsed:.0f} s ({elapsed / arguments.rounds:.0f} s per round)"
    return described


def _loads(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def _wrk_version() -> str:
    completed = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (completed.stdout + completed.stderr).splitlines()[:1]
    return first[0].split(" Copyright")[0] if first else "wrk"


def _cellsign_version() -> str:
    try:
        from importlib.metadata import version

        return version("cellsign")
    except Exception:  # noqa: BLE001 (not installed as a distribution: the source tree)
        return "source tree"


def _reference(models: Path, image: bytes) -> np.ndarray:
    """The probabilities every server must answer, from the SavedModel in this process."""
    from benchmarks.peers.servers.signs import SignsClassifier

    return SignsClassifier(models).probabilities([image])


if __name__ == "__main__":
    sys.exit(main())
