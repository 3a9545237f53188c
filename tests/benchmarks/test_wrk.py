"""wrk's report parsed, and the Lua script that makes it POST a fixed body."""

from __future__ import annotations

from pathlib import Path

from benchmarks.wrk import parse_wrk, write_script

WRK_REPORT = """Running 1s test @ http://127.0.0.1:1/classify
  1 threads and 32 connections
  Latency Distribution
     50%   12.50ms
     75%   20.00ms
     90%   30.00ms
     99%    1.20s
  412 requests in 1.00s, 200.00KB read
  Non-2xx or 3xx responses: 3
Requests/sec:    411.52
Transfer/sec:    199.00KB
"""


def test_parse_wrk_reads_rate_percentiles_and_failures() -> None:
    assert parse_wrk(WRK_REPORT) == {
        "requests": 412,
        "rps": 411.52,
        "p50_ms": 12.5,
        "p99_ms": 1200.0,
        "failed": 3,
        "socket_errors": "",
    }


def test_parse_wrk_without_failures_or_percentiles() -> None:
    report = "  10 requests in 1.00s, 1.00KB read\nRequests/sec:     10.00\n"
    parsed = parse_wrk(report)
    assert (parsed["requests"], parsed["rps"], parsed["failed"]) == (10, 10.0, 0)
    assert parsed["p99_ms"] is None


def test_script_loads_the_body_and_sets_every_header(tmp_path: Path) -> None:
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "7"}
    script = write_script(tmp_path, "v2", b"\x00\xffbody", headers).read_text()
    body_path = tmp_path / "v2.body"
    assert body_path.read_bytes() == b"\x00\xffbody"
    assert f'io.open("{body_path}", "rb")' in script and 'wrk.method = "POST"' in script
    for key, value in headers.items():
        assert f'wrk.headers["{key}"] = "{value}"' in script
