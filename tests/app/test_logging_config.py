"""LOG_FORMAT: JSON objects or text lines, fields included, the request ID when there is one."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from app.core import tracing
from app.logging_config import JsonFormatter, TextFormatter, configure_logging


def record(message: str = "hello %s", fields: dict | None = None) -> logging.LogRecord:
    made = logging.LogRecord("app.test", logging.INFO, __file__, 1, message, ("world",), None)
    if fields is not None:
        made.fields = fields
    return made


def test_json_puts_fields_at_the_top_level() -> None:
    line = JsonFormatter().format(record(fields={"status": 200, "path": "/a b"}))
    parsed = json.loads(line)
    assert parsed["message"] == "hello world"
    assert (parsed["level"], parsed["logger"]) == ("INFO", "app.test")
    assert (parsed["status"], parsed["path"]) == (200, "/a b")
    assert parsed["time"].endswith("Z")


def test_json_keeps_a_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("app", logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    line = JsonFormatter().format(failed)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_text_appends_fields_and_quotes_what_would_break_the_line() -> None:
    fields = {"status": 404, "path": "/x\ny z", "endpoint": "unmatched"}
    line = TextFormatter().format(record(fields=fields))
    assert "\n" not in line
    assert line.endswith('hello world status=404 path="/x\\ny z" endpoint=unmatched')


def test_lines_logged_during_a_request_name_it() -> None:
    token = tracing.begin(tracing.RequestTrace("req-9"))
    try:
        assert json.loads(JsonFormatter().format(record()))["request_id"] == "req-9"
        assert TextFormatter().format(record()).endswith("request_id=req-9")
    finally:
        tracing.end(token)
    assert "request_id" not in json.loads(JsonFormatter().format(record()))


@contextlib.contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger as a fresh process has it: pytest's handlers set aside meanwhile."""
    root = logging.getLogger()
    uvicorn_access = logging.getLogger("uvicorn.access")
    saved = (root.handlers, root.level, uvicorn_access.disabled)
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers, root.level, uvicorn_access.disabled = saved


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_configure_installs_one_handler_in_the_format(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with bare_root() as root:
        configure_logging("info", "text", quiet_uvicorn_access=True)
        configure_logging("info", log_format, quiet_uvicorn_access=True)  # replaces, never adds
        assert len(root.handlers) == 1
        logging.getLogger("app.access").info("request", extra={"fields": {"status": 201}})
        assert logging.getLogger("uvicorn.access").disabled
    (line,) = capsys.readouterr().err.splitlines()
    if log_format == "json":
        assert json.loads(line)["status"] == 201
    else:
        assert line.endswith("INFO app.access: request status=201")


def test_configure_leaves_a_root_configured_by_someone_else() -> None:
    with bare_root() as root:
        theirs = logging.NullHandler()
        root.addHandler(theirs)
        configure_logging("debug", "json", quiet_uvicorn_access=False)
        assert root.handlers == [theirs]
        assert not logging.getLogger("uvicorn.access").disabled
