import pytest

from app.api.numbers import MAX_DIGITS, whole_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("7", 7), ("0042", 42), ("9" * MAX_DIGITS, 10**MAX_DIGITS - 1)],
)
def test_reads_ascii_whole_numbers(text: str, expected: int) -> None:
    assert whole_number(text) == expected


@pytest.mark.parametrize(
    "text",
    [None, "", "-1", "+1", " 1", "1 ", "1.0", "1e3", "\u0663", "\u00b2", "\uff11", "9" * 5000],
)
def test_refuses_anything_else(text: str | None) -> None:
    assert whole_number(text) is None


def test_range_is_checked() -> None:
    assert whole_number("5", minimum=1, maximum=5) == 5
    assert whole_number("0", minimum=1) is None
    assert whole_number("6", maximum=5) is None
