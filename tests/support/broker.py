"""A real Mosquitto process for tests, configured by :func:`certs.write_mosquitto_config`.

    with MosquittoBroker(pki, tmp_path) as broker:
        ctx = tls_context(pki, "dev-1")
        async with aiomqtt.Client(broker.host, broker.port, tls_context=ctx): ...

``stop()`` + ``start()`` restart it on the same port with the same persistence database
(broker-restart tests); ``reload()`` sends SIGHUP and waits until Mosquitto has reloaded.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from certs import (
    PkiDir,
    is_server_identity,
    issue_device_cert,
    issue_server_cert,
    server_identity,
    write_mosquitto_config,
)

__all__ = [
    "SPARE_SERVER_NAMES",
    "BrokerError",
    "MosquittoBroker",
    "find_mosquitto",
    "free_port",
    "issue_spare_server_identities",
    "spare_server_identity",
    "tls_context",
    "unique_device",
]

_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"]
)


class BrokerError(RuntimeError):
    """The broker did not start, stop or reload as asked; the message carries its log tail."""


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` binary (also looked up in sbin directories), or None."""
    return shutil.which("mosquitto", path=_SEARCH_PATH)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def tls_context(pki: PkiDir, identity: str | None) -> ssl.SSLContext:
    """Client TLS context trusting the fleet CA and presenting ``identity``'s certificate.

    ``identity``: a device id (its certificate must have been issued), a server identity
    (SERVER_IDENTITY or one of :func:`spare_server_identity`'s), or None for no client
    certificate at all.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None and is_server_identity(identity):
        ctx.load_cert_chain(pki.server_cert(identity), pki.server_key(identity))
    elif identity is not None:
        ctx.load_cert_chain(pki.device_cert(identity), pki.device_key(identity))
    return ctx


SPARE_SERVER_NAMES = tuple(f"test-{n}" for n in range(8))
"""Server identities a test PKI carries besides SERVER_IDENTITY (issued before any broker config
is written, so every test broker's ACL grants them the server's topics)."""

_spare_turn = itertools.count()


def issue_spare_server_identities(pki: PkiDir) -> None:
    for name in SPARE_SERVER_NAMES:
        issue_server_cert(pki, name, overwrite=True)


def spare_server_identity() -> str:
    """A server identity for a test's own server-side client (a command injector, a stand-in
    server): the broker makes the certificate CN the client id, so a second client under the real
    server's identity would knock it off. Taken in turn from SPARE_SERVER_NAMES, so clients open
    at the same time in one test get different ones."""
    return server_identity(SPARE_SERVER_NAMES[next(_spare_turn) % len(SPARE_SERVER_NAMES)])


def unique_device(pki: PkiDir, prefix: str = "dev") -> str:
    """Issue a certificate for a fresh device id (``<prefix>-<random>``) and return the id."""
    device_id = f"{prefix}-{uuid.uuid4().hex[:12]}"
    issue_device_cert(pki, device_id)
    return device_id


class MosquittoBroker:
    """A ``mosquitto -c <conf>`` subprocess on a free localhost port, with mutual TLS."""

    host = "127.0.0.1"

    def __init__(
        self,
        pki: PkiDir,
        workdir: Path,
        *,
        persistence: bool = True,
        start_timeout: float = 10.0,
        binary: str | None = None,
    ) -> None:
        found = binary or find_mosquitto()
        if found is None:
            raise BrokerError("mosquitto binary not found (apt-get install mosquitto)")
        self.binary = found
        self.pki = pki
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.port = free_port(self.host)
        self.log_path = workdir / "mosquitto.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = write_mosquitto_config(
            pki,
            workdir / "conf",
            port=self.port,
            bind=self.host,
            persistence_dir=workdir / "data" if persistence else None,
        )
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or restart) on ``self.port``; return once the port accepts TCP connections."""
        if self.running:
            raise BrokerError("broker already running")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # the binary is found on PATH, arguments are ours
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise BrokerError(f"mosquitto exited with status {code} at start-up\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"mosquitto not listening after {self.start_timeout}s\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Mosquitto saves its persistence database), then SIGKILL after ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP: re-read config, ACL and CRL. Returns once Mosquitto logged the reload."""
        if self._proc is None or not self.running:
            raise BrokerError("broker not running")
        marker = b"Reloading config"
        before = self._log_bytes().count(marker)
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self._log_bytes().count(marker) <= before:
            if time.monotonic() > deadline or not self.running:
                raise BrokerError(f"mosquitto did not reload within {timeout}s\n{self.log_tail()}")
            time.sleep(0.02)

    # -- diagnostics ---------------------------------------------------------------------

    def _log_bytes(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    def log_tail(self, lines: int = 30) -> str:
        text = self._log_bytes().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.host}:{self.port}, running={self.running})"
