"""The product app plus ``POST /noop``: the HTTP ceiling of the same server stack.

``/noop`` receives the same multipart upload as ``/classify`` (every part read through the
same middleware, parser and event loop) and answers a small JSON without touching a
model, so the gap between the two is what inference and batching cost. It lives here,
not in ``app/``, because it is a measuring device, not a product endpoint.
"""

from __future__ import annotations

from fastapi import UploadFile

from app.main import create_app

app = create_app()


async def noop(file: list[UploadFile]) -> dict[str, int]:
    total = 0
    for upload in file:
        total += len(await upload.read())
    return {"files": len(file), "bytes": total}


app.add_api_route("/noop", noop, methods=["POST"])
# Put the route first so a catch-all mount (the web page at "/") cannot shadow it.
app.router.routes.insert(0, app.router.routes.pop())
