"""Security headers: on every response, plus a Content-Security-Policy on the web page.

The page (app/static/) loads its one script and one style sheet from /static, fetches the
API on the same origin and shows uploads and results as ``blob:`` (or ``data:``) images, so
its policy allows exactly that: no inline script or style, no other origin, no framing.
The policy is not sent on the API docs (/docs, /redoc), whose pages load from a CDN.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders

PAGE_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
EVERY_RESPONSE = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def is_page(path: str) -> bool:
    return path == "/" or path.startswith("/static/")


def add_security_headers(headers: MutableHeaders, path: str) -> None:
    """Set the headers on a response to ``path`` (those the app set itself are kept). Called
    by the outermost middleware (``request_context``), so every response gets them, CORS
    preflights and refusals from other middlewares included."""
    for name, value in EVERY_RESPONSE.items():
        headers.setdefault(name, value)
    if is_page(path):
        headers.setdefault("Content-Security-Policy", PAGE_CSP)
