"""/classify against an earlier commit: does a request still cost the server what it did?

``python -m benchmarks.regression --baseline REV --models DIR [--rounds 8] [--duration 5]
[--workers 1] [--raw]``

The baseline commit is checked out in a temporary git worktree and served from there, the
working tree's code beside it: ``--workers`` processes each (one by default), the same
models, the same one-image multipart upload (``--raw``: the JPEG as the raw body). Both
servers stay up (the one not measured is idle) and wrk runs alternate between them, so a
change in the machine's speed, which on a shared machine moves these figures by a quarter
within minutes, hits both alike. Each run gives req/s and the server's
core-ms per request; the summary is the medians and the median of the per-round ratios.

A commit from before ``python -m app`` existed is served as it was then:
``uvicorn app.main:app`` with uvicorn's default loop and protocol (access log off), and
only with one worker.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from benchmarks import REPO_ROOT
from benchmarks.environment import machine_description
from benchmarks.payloads import multipart_body, signs_images
from benchmarks.report import markdown_rows, publish
from benchmarks.servers import UvicornServer, tree_cpu_seconds
from benchmarks.wrk import CONNECTIONS, run_wrk, write_script, wrk_missing

SIDES = ("baseline", "current")


class TreeServer(UvicornServer):
    """The code in ``tree`` served the way that commit was meant to be served."""

    def __init__(self, tree: Path, models: Path, log_path: Path, workers: int = 1) -> None:
        env = {"MODEL_DIR": str(models), "RELOAD_INTERVAL_S": "0", "DEVICE": "cpu"}
        super().__init__("app.main:app", env, log_path, "/readyz")
        self.cwd = tree
        self.production = has_production_command(tree)
        if self.production:
            self.env |= {"WORKERS": str(workers), "HOST": "127.0.0.1", "PORT": str(self.port)}
        elif workers != 1:
            raise ValueError(f"{tree} has no `python -m app`: one worker only")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "app"] if self.production else super().command()


def has_production_command(tree: Path) -> bool:
    return (tree / "app" / "__main__.py").is_file()


@contextlib.contextmanager
def worktree(revision: str, work: Path) -> Iterator[Path]:
    """``revision`` checked out (detached) in a folder under ``work``, removed afterwards."""
    folder = work / "baseline"
    git = ["git", "-C", str(REPO_ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(folder), revision], check=True)
    try:
        yield folder
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(folder)], check=False)


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians per side and the median of the per-round ratios (current / baseline)."""
    by_side = {side: [run for run in runs if run["side"] == side] for side in SIDES}
    result = {}
    for side, side_runs in by_side.items():
        result[f"{side}_rps"] = statistics.median(run["rps"] for run in side_runs)
        result[f"{side}_core_ms"] = statistics.median(run["core_ms"] for run in side_runs)
    pairs = list(zip(by_side["baseline"], by_side["current"], strict=True))
    result["rps_ratio"] = statistics.median(cur["rps"] / base["rps"] for base, cur in pairs)
    result["core_ms_ratio"] = statistics.median(
        cur["core_ms"] / base["core_ms"] for base, cur in pairs
    )
    return result


def measure(
    servers: Mapping[str, UvicornServer], script: Path, rounds: int, duration_s: float
) -> list[dict[str, Any]]:
    for server in servers.values():  # warm-up: batch shapes traced, thread pools full
        run_wrk(server.base_url + "/classify", script, min(2.0, duration_s))
    runs = []
    for round_ in range(1, rounds + 1):
        for side in SIDES:
            server = servers[side]
            before = tree_cpu_seconds(server.pid)
            result = run_wrk(server.base_url + "/classify", script, duration_s)
            answered = max(result["requests"] - result["failed"], 1)
            runs.append(
                {
                    "side": side,
                    "round": round_,
                    "rps": result["rps"],
                    "p99_ms": result["p99_ms"],
                    "failed": result["failed"],
                    "core_ms": (tree_cpu_seconds(server.pid) - before) * 1000 / answered,
                    "wrk_core_percent": result["wrk_cpu_s"] / duration_s * 100,
                }
            )
    return runs


def markdown(runs: list[dict[str, Any]], baseline: str, note: str) -> str:
    total = summary(runs)
    lines = [
        f"# /classify: working tree against {baseline}",
        "",
        note,
        "",
        "| round | side | req/s | p99 ms | server core-ms per request | wrk % of a core | failed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *markdown_rows(
            "| {round} | {side} | {rps:.0f} | {p99_ms:.0f} | {core_ms:.2f} "
            "| {wrk_core_percent:.1f} | {failed} |",
            runs,
        ),
        "",
        f"Medians: {total['baseline_rps']:.0f} -> {total['current_rps']:.0f} req/s, "
        f"{total['baseline_core_ms']:.2f} -> {total['current_core_ms']:.2f} core-ms per request."
        f" Median of the per-round ratios (current / baseline): req/s "
        f"{total['rps_ratio']:.2f}, core-ms per request {total['core_ms_ratio']:.2f}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.regression", description=__doc__)
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--models", type=Path, required=True, help="models both servers load")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=8, help="alternations of the two servers")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per side")
    parser.add_argument("--raw", action="store_true", help="the JPEG as the raw request body")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/regression_results.md"))
    arguments = parser.parse_args(argv)
    if wrk_missing():
        return 1
    machine = machine_description()
    with tempfile.TemporaryDirectory(prefix="regression-") as folder:
        work = Path(folder)
        image = signs_images(arguments.data, 1)
        body, content_type = (image[0], "image/jpeg") if arguments.raw else multipart_body(image)
        script = write_script(work, "classify", body, {"Content-Type": content_type})
        with worktree(arguments.baseline, work) as tree, contextlib.ExitStack() as stack:
            trees = {"baseline": tree, "current": REPO_ROOT}
            servers = {
                side: stack.enter_context(
                    TreeServer(
                        trees[side], arguments.models, work / f"{side}.log", arguments.workers
                    )
                )
                for side in SIDES
            }
            runs = measure(servers, script, arguments.rounds, arguments.duration)
    note = (
        f"{machine['processor']}, {len(os.sched_getaffinity(0))} usable cores, "
        f"Python {machine['python']}; code {machine['git']}; models {arguments.models.name}. "
        f"wrk -t1 -c{CONNECTIONS}, {arguments.duration:g} s per run, {arguments.rounds} "
        f"rounds alternating, after a warm-up of up to 2 s each; {arguments.workers} worker "
        f"process(es) per side, {'raw JPEG' if arguments.raw else 'multipart'} body, access "
        f"logs off, started {machine['date_utc']} (load average "
        f"{machine['load_average_at_start'][0]:.2f}). Command: python -m benchmarks.regression "
        f"--baseline {arguments.baseline} --models DIR --rounds {arguments.rounds} "
        f"--duration {arguments.duration:g} --workers {arguments.workers}"
        f"{' --raw' if arguments.raw else ''}."
    )
    publish(markdown(runs, arguments.baseline, note), arguments.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
