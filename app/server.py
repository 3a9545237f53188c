"""The production server: uvicorn started from the settings, with the limits the edge needs,
in ``WORKERS`` processes.

The protocol is uvicorn's httptools one with a head size limit (``MAX_HEADER_BYTES``) and
JSON refusals (app/protocol.py); ``uvicorn app.main:app`` has no such limit. uvicorn's own
access log is off: the app writes one line per request itself (``ACCESS_LOG``).
What uvicorn cannot bound (how slowly a client may send its head or body) is left to the
reverse proxy of the documented deployments (docker/nginx/cellsign.conf, docs/security.md).

One interpreter lock caps a process at about one core (parsing, JSON, the event loop), so
several worker processes, each with its own models and micro-batchers, share the listening
socket (docs/workers.md). They act as one service through a runtime folder created fresh at
each start and removed at exit: ``/metrics`` reads every worker's values (prometheus_client's
multiprocess mode) and an admin change is in force in every worker before its call answers
(app/core/reload_signal.py). ``/readyz`` answers for the worker that receives it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from app.settings import Settings, get_settings

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def server_config(settings: Settings) -> uvicorn.Config:
    """With several workers each one builds its app itself (from the environment), and the
    supervising process never imports the app: it stays free of TensorFlow's memory."""
    several = settings.workers > 1
    if several:
        app: str | Callable[..., Any] = "app.main:create_app"
    else:
        from app.main import create_app

        app = create_app(settings)
    return uvicorn.Config(
        app,
        factory=several,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        http="app.protocol:HeadLimitedHttpToolsProtocol",
        h11_max_incomplete_event_size=settings.max_header_bytes,  # read by that protocol
        # uvloop accepts one new connection per loop iteration: under a connection flood a
        # fresh connection (a Kubernetes probe) waited about 0.5 s for /healthz, against
        # 0.03 s on asyncio's own loop (docs/overload.md).
        loop="asyncio",
        timeout_keep_alive=settings.keep_alive_timeout_s,
        limit_concurrency=settings.max_concurrency,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        access_log=False,
        log_level=settings.log_level,
    )


class OneSocketEach(Multiprocess):
    """Worker i listens on socket i, all bound to the same address with ``SO_REUSEPORT``, so
    the kernel spreads new connections over the workers. With one shared socket, the worker
    whose event loop woke first accepted every waiting connection (28 of wrk's 32 landed in
    one of two workers, which then served fewer requests than one worker alone). A worker
    that uvicorn restarts (it died, or missed its ping) listens on all the sockets, so none
    is left unserved; connections then spread less evenly until the server restarts.

    Stopping (SIGTERM, SIGINT) closes this process's copies of the listening sockets in the
    signal handler itself and tells the workers at once; each worker closes its own copy as
    its graceful shutdown begins (uvicorn's ``Server.shutdown``) and finishes the requests
    it has. The kernel then refuses new connections. (uvicorn's own supervisor keeps its
    copies until the last worker has exited: new connections queue where no one accepts
    them any more, hang, then are reset.)
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.stopping = False
        self._starting_workers = False  # while set, the sockets may be in the middle of a hand-over
        for stop in STOP_SIGNALS:
            signal.signal(stop, self._stop_signal)

    def _stop_signal(self, number: int, frame: FrameType | None) -> None:
        self.signal_queue.append(number)  # handled in the main loop as uvicorn does
        self.stopping = True
        if not self._starting_workers:
            self._close_listeners()
        for process in self.processes:  # (uvicorn's own terminate follows in the main loop)
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def _close_listeners(self) -> None:
        for sock in self.sockets:
            sock.close()

    @contextlib.contextmanager
    def _starting(self) -> Iterator[None]:
        """Around anything that hands the sockets to a new worker: a stop signal arriving
        meanwhile closes them only afterwards."""
        self._starting_workers = True
        try:
            yield
        finally:
            self._starting_workers = False
            if self.stopping:
                self._close_listeners()

    def init_processes(self) -> None:
        with self._starting():
            if len(self.sockets) != self.processes_num:  # no SO_REUSEPORT: one shared socket
                super().init_processes()
                return
            for sock in self.sockets:
                process = Process(self.config, [sock])
                process.start()
                self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        if self.stopping:
            return  # no replacement for a worker that exits while the server stops
        with self._starting():
            super().keep_subprocess_alive()

    def handle_hup(self) -> None:
        if not self.stopping:
            with self._starting():
                super().handle_hup()

    def handle_ttin(self) -> None:
        if not self.stopping:
            with self._starting():
                super().handle_ttin()


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to one address with ``SO_REUSEPORT`` (port 0: the port the
    first one gets); one socket where the platform lacks that option.

    They name their protocol, TCP: asyncio turns Nagle's algorithm off only on connections
    accepted from such a socket, and the socket object each worker rebuilds keeps these
    values. Without it, a response written in two parts (head, then body) waits for the
    client's delayed ACK, about 40 ms on Linux.
    """
    reuse_port = hasattr(socket, "SO_REUSEPORT")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    for _ in range(count if reuse_port else 1):
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def serve(settings: Settings) -> None:
    if settings.workers == 1:
        uvicorn.Server(server_config(settings)).run()
        return
    runtime_dir = Path(tempfile.mkdtemp(prefix="cellsign-"))
    try:
        (runtime_dir / "metrics").mkdir()
        # Read by every worker when it starts (before prometheus_client is imported there).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(runtime_dir / "metrics")
        os.environ["RUNTIME_DIR"] = str(runtime_dir)
        config = server_config(settings)
        sockets = listening_sockets(settings.host, settings.port, settings.workers)
        OneSocketEach(config, sockets=sockets).run()
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


def main() -> None:
    serve(get_settings())
