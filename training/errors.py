"""User errors: the CLI prints their message as one line and exits non-zero, no traceback."""


class DataError(ValueError):
    """Missing, empty or malformed training data; the message names the path at fault."""
