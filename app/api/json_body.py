"""JSON request bodies that FastAPI parses, bounded before and while they are parsed.

FastAPI reads a JSON body with ``await request.json()`` (Starlette's ``json.loads``), which
follows nesting until the interpreter's recursion limit and reads integers of any length:
64 KiB of ``[`` ran into the recursion limit (a ``RecursionError``, which FastAPI turns into
an unexplained 400), 900 levels were parsed and echoed back in the 422, and a 4,000-digit
version number went on to the registry.
A route built with ``JSONBodyRoute`` hands FastAPI a ``BoundedJSONRequest`` instead, whose
``json()`` refuses, with a 400 naming the limit:

* a body over ``MAX_JSON_BYTES`` (413; the body limit middleware already stops one while it
  streams, this holds whatever cap a route is given there);
* arrays and objects nested more than ``MAX_JSON_DEPTH`` deep, found by a scan whose work
  is a few passes in C over the body, before ``json.loads`` sees it;
* an integer of more than ``MAX_DIGITS`` digits, and ``NaN``/``Infinity`` (not JSON).

Malformed JSON is still FastAPI's own 422 (``json_invalid``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from app.api.middleware.limits import DEFAULT_BODY_BYTES
from app.api.numbers import MAX_DIGITS

MAX_JSON_BYTES = DEFAULT_BODY_BYTES
MAX_JSON_DEPTH = 32

# A string, escapes included; the closing quote is optional, so every match attempt that
# starts at a quote succeeds and the scan stays linear (possessive: nothing to backtrack).
_STRING = re.compile(rb'"[^"\\]*+(?:\\[\s\S][^"\\]*+)*+"?')
_LONG_DIGITS = re.compile(rb"[0-9]{%d}" % (MAX_DIGITS + 1))
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in _BRACKETS)
_STEP = np.zeros(256, dtype=np.int32)  # +1 opens a level, -1 closes one
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class _RefusedNumber(ValueError):
    """A number ``json.loads`` met that the service does not read."""


def _bounded_int(text: str) -> int:
    if len(text.removeprefix("-")) > MAX_DIGITS:
        raise _RefusedNumber(f"an integer in the JSON body has more than {MAX_DIGITS} digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise _RefusedNumber(f"the JSON body holds {name}, which JSON does not allow")


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` nests arrays and objects more than ``limit`` deep (brackets inside
    strings do not count). Most bodies hold no more than ``limit`` opening brackets in all
    and are answered by two counts."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    levels = np.cumsum(_STEP[np.frombuffer(brackets, dtype=np.uint8)])
    return bool(levels.size) and int(levels.max()) > limit


def parse_json(body: bytes) -> Any:
    """``body`` as JSON, or an ``HTTPException`` naming the bound it breaks (a
    ``json.JSONDecodeError`` when it is not JSON at all)."""
    if len(body) > MAX_JSON_BYTES:
        raise HTTPException(413, detail=f"the JSON body exceeds {MAX_JSON_BYTES} bytes")
    if too_deep(body):
        detail = f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} deep"
        raise HTTPException(400, detail=detail)
    # Reading each integer through ``_bounded_int`` costs a Python call per number (7 ms
    # instead of 1.5 for 64 KiB of them); only a body with a long run of digits needs it.
    parse_int = _bounded_int if _LONG_DIGITS.search(body) else None
    try:
        return json.loads(body, parse_int=parse_int, parse_constant=_no_constant)
    except _RefusedNumber as error:
        raise HTTPException(400, detail=str(error)) from None


class BoundedJSONRequest(Request):
    """A request whose ``json()`` is ``parse_json`` (what FastAPI calls for a JSON body)."""

    async def json(self) -> Any:
        if not hasattr(self, "_bounded_json"):
            self._bounded_json = parse_json(await self.body())
        return self._bounded_json


class JSONBodyRoute(APIRoute):
    """A route whose JSON body FastAPI parses through ``BoundedJSONRequest``: give it as
    ``route_class`` to every router with a route that takes a JSON body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(BoundedJSONRequest(request.scope, request.receive))

        return handle
