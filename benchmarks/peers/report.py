"""The peer benchmark's figures: medians over rounds, and the markdown page they fill."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.peers.catalog import CELLSIGN, PEERS


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (server, parallel, request): the median of each figure over rounds."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["peer"], row["parallel"], row["request"]), []).append(row)
    merged = []
    for (peer, parallel, request), group in groups.items():
        keys = ("rps", "p99_ms", "server_core_ms_per_request", "server_cores", "wrk_core_percent")
        figures = {key: _median([row[key] for row in group]) for key in keys}
        merged.append(
            {
                "peer": peer,
                "parallel": parallel,
                "request": request,
                "rounds": len(group),
                **figures,
                "failed": sum(row["failed"] for row in group),
                "socket_errors": "; ".join(
                    row["socket_errors"] for row in group if row["socket_errors"]
                ),
                "load_average": _median([row["load_average"] for row in group]),
            }
        )
    return merged


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def markdown(rows: list[dict[str, Any]], context: dict[str, Any]) -> str:
    """The median table, then every round, then the conditions."""
    peer_rates = [row["rps"] for row in rows if row["peer"] != CELLSIGN]
    best = max(peer_rates, default=None)
    lines = [
        "# cellsign and other model servers, same model and image (python -m benchmarks.peers)",
        "",
        context["summary"],
        "",
        "| server | version | settings | request | req/s | vs best peer | p99 ms | "
        "server core-ms/req | server cores | wrk CPU % of a core | failed |",
        "|" + "---|" * 11,
    ]
    for row in sorted(rows, key=lambda row: -row["rps"]):
        peer = PEERS[row["peer"]]
        ratio = "-" if best is None else f"{row['rps'] / best:.2f}x"
        failed = f"{row['failed']}{' ' + row['socket_errors'] if row['socket_errors'] else ''}"
        lines.append(
            f"| {peer.title} | {context['versions'][peer.name][peer.package]} | "
            f"{peer.settings(row['parallel'])} | {row['request']} | {row['rps']:.0f} | {ratio} | "
            f"{_cell(row['p99_ms'])} | {_cell(row['server_core_ms_per_request'], 2)} | "
            f"{_cell(row['server_cores'], 2)} | {_cell(row['wrk_core_percent'])} | {failed} |"
        )
    lines += ["", "Every round (req/s, load average at the start of the run):", ""]
    for row in context["rounds"]:
        lines.append(
            f"- round {row['round']}: {row['peer']} x{row['parallel']}, {row['request']}: "
            f"{row['rps']:.0f} req/s, p99 {_cell(row['p99_ms'])} ms, "
            f"load {row['load_average']:.2f}"
        )
    if context["problems"]:
        lines += ["", "Not measured (failed to start or answered wrongly):", ""]
        lines += [f"- {problem}" for problem in context["problems"]]
    lines += ["", "## Conditions", ""]
    lines += [f"- {key}: {value}" for key, value in context["conditions"].items()]
    return "\n".join(lines) + "\n"


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
