"""``asked_timeout``: the X-Request-Timeout grammar (plain decimal or exponent forms, ASCII,
bounded in length, finite and above 0) and how the middleware caps what it asks for."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from app.api.overload.admission import (
    MAX_TIMEOUT_CHARS,
    TIMEOUT_HEADER,
    asked_timeout,
    request_timeout,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30.0),
        ("2.5", 2.5),
        ("0.25", 0.25),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e1", 10.0),
        ("2.5E-1", 0.25),
        ("1e+2", 100.0),
        ("5e-324", 5e-324),  # tiny but above 0: the request is shed at once, rightly
        ("9" * MAX_TIMEOUT_CHARS, float("9" * MAX_TIMEOUT_CHARS)),
    ],
)
def test_plain_numbers_are_read(value: str, seconds: float) -> None:
    assert asked_timeout(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0",
        "0.0",
        "0e9",
        "-1",
        "+1",
        "1e999",  # inf to float()
        "inf",
        "Infinity",
        "nan",
        " 1",
        "1 ",
        "1_0",
        ".",
        "e5",
        "1e",
        "1.5s",
        "0x10",
        "٣",  # float() reads any Unicode digit
        "１",  # a fullwidth 1
        "²",
        "9" * (MAX_TIMEOUT_CHARS + 1),
        "9" * 10_000,
    ],
)
def test_anything_else_is_refused(value: str) -> None:
    assert asked_timeout(value) is None


def test_the_middleware_caps_a_valid_value_and_ignores_a_refused_one() -> None:
    """An invalid value gets the full timeout here; the endpoint answers it with a 422."""
    assert request_timeout(Headers({TIMEOUT_HEADER: "2.5"}), 60) == 2.5
    assert request_timeout(Headers({TIMEOUT_HEADER: "3600"}), 60) == 60
    assert request_timeout(Headers({TIMEOUT_HEADER: "9" * 10_000}), 60) == 60
    assert request_timeout(Headers({}), 60) == 60
