"""The production server: uvicorn started from the settings, with the limits the edge needs.

``uvicorn app.main:app`` picks the httptools parser when it is installed, and that parser
has no header size limit: a 64 MB header that never ends costs seconds of event-loop CPU.
Here the h11 parser is chosen explicitly so that ``MAX_HEADER_BYTES`` bounds the head.
What uvicorn cannot bound (how slowly a client may send its head or body) is left to the
reverse proxy of the documented deployments (docker/nginx/cellsign.conf, docs/security.md).
"""

from __future__ import annotations

import uvicorn

from app.main import create_app
from app.settings import Settings, get_settings


def server_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http="h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        limit_concurrency=settings.max_concurrency,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        log_level=settings.log_level,
    )


def main() -> None:
    uvicorn.Server(server_config(get_settings())).run()
