"""A real Milvus 2.3.5 standalone server for the tests, and stores on it.

``scripts/install-milvus.sh`` installs PyPI's ``milvus==2.3.5`` (the standalone server
binary with its launcher) into ``.venv-milvus``. ``shared_server()`` starts one per test
session in a temporary folder, on free ports only: the proxy, every component's port and the
embedded etcd's client and peer ports (the launcher's ``--etcd-port`` only tells Milvus where
etcd is; the embedded etcd itself listens where ``ETCD_CONFIG_PATH``'s file says). It is
stopped when the session ends (``stop_shared_server``, and at exit as a backstop): an idle
Milvus keeps a core busy.

``milvus_store_factory()`` gives a store on a fresh collection prefix of that server; the
behaviour suite shared with the embedded store calls it, and each store's collections are
dropped when the session's server stops (or earlier through ``drop_stores``).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.gallery.milvus_store import MilvusGalleryStore

REPO_ROOT = Path(__file__).resolve().parents[3]
MILVUS_SERVER = REPO_ROOT / ".venv-milvus" / "bin" / "milvus-server"
START_TIMEOUT_S = 240.0  # ~7 s on an idle machine; CI's two cores may be busy with others
READY_LINE = "Ctrl+C to exit"
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
PORT_OPTIONS = (
    "--proxy-port",
    "--proxy-internal-port",
    "--etcd-port",
    "--root-coord-port",
    "--query-coord-port",
    "--query-node-port",
    "--index-coord-port",
    "--index-node-port",
    "--data-coord-port",
    "--data-node-port",
)
# Test-only server settings: growing segments are searched exactly (2.3's interim IVF index
# on them searches 16 of 128 lists, so a filtered search there would not be exact), and
# querycoord notices a load sooner, so a fresh collection loads in about 1.5 s, not 2.5 s.
EXTRA_CONFIG = (
    "queryNode.segcore.interimIndex.enableIndex=false",
    "queryCoord.checkInterval=100",
    "queryCoord.distPullInterval=100",
)
EXTRA_ENV = {"QUERYCOORD_UPDATENEXTTARGETINTERVAL": "1", "QUERYCOORD_CHECKCHANNELINTERVAL": "100"}


class MilvusUnavailable(RuntimeError):
    """The server could not be started here (binary missing, or it failed to come up)."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (all bound at once, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class MilvusServer:
    data_dir: Path
    process: subprocess.Popen[bytes]
    ports: list[int]  # PORT_OPTIONS' ports in order, then the embedded etcd's peer port
    log_path: Path
    prefixes: itertools.count = field(default_factory=lambda: itertools.count(1))
    stores: list[MilvusGalleryStore] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The proxy's port: where clients connect."""
        return self.ports[0]

    def url(self, prefix: str) -> str:
        return f"milvus://127.0.0.1:{self.port}/{prefix}"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGINT lets the launcher stop Milvus (SIGTERM, then SIGKILL after 1 s); then the
        whole process group goes, whatever is left of it, and the folder with it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGINT)
                self.process.wait(timeout=15)
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL to the launcher and Milvus at once (a crash); the data stays."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start_server(
    start_timeout_s: float = START_TIMEOUT_S, again: MilvusServer | None = None
) -> MilvusServer:
    """Start a private Milvus standalone and wait until it serves; MilvusUnavailable when it
    cannot (the caller skips then). ``again``: a stopped server to start once more on its
    folder and ports, with the data it held."""
    if not MILVUS_SERVER.is_file():
        raise MilvusUnavailable(
            f"{MILVUS_SERVER.relative_to(REPO_ROOT)} is missing: run scripts/install-milvus.sh"
        )
    if again is None:
        data_dir = Path(tempfile.mkdtemp(prefix="cellsign-milvus-"))
        ports = free_ports(len(PORT_OPTIONS) + 1)
    else:
        data_dir, ports = again.data_dir, again.ports
    etcd_client, etcd_peer = ports[2], ports[-1]
    etcd_config = data_dir / "embed-etcd.yaml"
    etcd_config.write_text(
        "name: cellsign-test\n"
        f"listen-client-urls: http://127.0.0.1:{etcd_client}\n"
        f"advertise-client-urls: http://127.0.0.1:{etcd_client}\n"
        f"listen-peer-urls: http://127.0.0.1:{etcd_peer}\n"
        f"initial-advertise-peer-urls: http://127.0.0.1:{etcd_peer}\n"
        f"initial-cluster: cellsign-test=http://127.0.0.1:{etcd_peer}\n"
    )
    command = [str(MILVUS_SERVER), "--data", str(data_dir / "milvus")]
    if shutil.which("setpriv"):
        # SIGINT to the launcher (which then stops Milvus) should the test process die
        # without stopping it, killed by a CI timeout say.
        command = ["setpriv", "--pdeathsig", "INT", *command]
    for option, port in zip(PORT_OPTIONS, ports, strict=False):
        command += [option, str(port)]
    for component in COMPONENTS:
        command += ["--extra-config", f"{component}.ip=127.0.0.1"]
    for setting in EXTRA_CONFIG:
        command += ["--extra-config", setting]
    env = {
        **os.environ,
        **EXTRA_ENV,
        "ETCD_CONFIG_PATH": str(etcd_config),
        "PYTHONUNBUFFERED": "1",  # the launcher's "ready" banner reaches the log at once
    }
    log_path = data_dir / "launcher.log"
    with log_path.open("ab") as log:
        start = log.tell()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stop() reaches the milvus child
        )
    server = MilvusServer(data_dir=data_dir, process=process, ports=ports, log_path=log_path)
    deadline = time.monotonic() + start_timeout_s
    while READY_LINE not in log_path.read_bytes()[start:].decode(errors="replace"):
        if not server.running() or time.monotonic() > deadline:
            tail = log_path.read_bytes()[start:].decode(errors="replace")[-1500:]
            server.stop()
            raise MilvusUnavailable(f"milvus-server did not come up:\n{tail}")
        time.sleep(0.2)
    return server


_shared: MilvusServer | None = None
_shared_failure: str | None = None


def shared_server() -> MilvusServer:
    """The session's server, started on first use; skips the calling test (with the reason)
    where it cannot start. A server that died is not restarted: its tests fail instead."""
    global _shared, _shared_failure
    if _shared is None and _shared_failure is None:
        try:
            _shared = start_server()
            atexit.register(stop_shared_server)
        except MilvusUnavailable as exc:
            _shared_failure = str(exc)
    if _shared is None:
        pytest.skip(f"no Milvus server: {_shared_failure}")
    return _shared


def stop_shared_server() -> None:
    global _shared
    if _shared is not None:
        server, _shared = _shared, None
        drop_stores(server)
        server.stop()


def drop_stores(server: MilvusServer) -> None:
    """Drop the collections of every store the factory made (keeps the server lean)."""
    while server.stores:
        store = server.stores.pop()
        if server.running():
            with contextlib.suppress(Exception):  # a test may have left the store broken
                store.drop_everything()
        store.close()


def milvus_store_factory() -> MilvusGalleryStore:
    """A store on a fresh collection prefix of the session's Milvus server: an empty
    gallery with no space yet."""
    server = shared_server()
    store = MilvusGalleryStore(server.url(f"t{os.getpid()}_{next(server.prefixes)}"))
    server.stores.append(store)
    return store


def replica_of(store: MilvusGalleryStore) -> MilvusGalleryStore:
    """A second store on the same gallery, as another replica would open it."""
    server = shared_server()
    replica = MilvusGalleryStore(f"milvus://127.0.0.1:{server.port}/{store.location.prefix}")
    server.stores.insert(0, replica)  # dropping it again after the original is harmless
    return replica
