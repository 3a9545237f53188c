"""Whole numbers read from request text (headers, path segments, query values).

Python's ``int()`` accepts any Unicode digit and any length (up to 4,300 digits, then a
``ValueError``), and ``str.isdigit()`` is true for superscripts ``int()`` refuses; either
turned a malformed number into a 500. Every number a request carries is read here instead:
ASCII digits only, at most ``MAX_DIGITS`` of them, then range-checked, so the work is fixed
and the caller answers a 4xx with its own wording.
"""

from __future__ import annotations

MAX_DIGITS = 18  # below 2**63: every count or size the service accepts fits


def whole_number(
    text: str | None, minimum: int = 0, maximum: int = 10**MAX_DIGITS - 1
) -> int | None:
    """``text`` as an int within ``[minimum, maximum]``; None when it is absent, not 1 to
    ``MAX_DIGITS`` ASCII digits, or out of range."""
    if text is None or not 0 < len(text) <= MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if minimum <= value <= maximum else None
