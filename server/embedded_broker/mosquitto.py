"""Mosquitto as a child process, configured by :func:`certs.write_mosquitto_config`.

The configuration is the production one (mutual TLS, CN as username, the fleet ACL, CRL), bound
to a loopback port. Mosquitto cannot be asked for a free port and report it, so a free port is
picked first and the start is retried if another process takes it in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from pathlib import Path

from certs import PkiDir, write_mosquitto_config
from server.embedded_broker.errors import EmbeddedBrokerError

__all__ = ["MosquittoBroker"]

logger = logging.getLogger(__name__)

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 5


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class MosquittoBroker:
    """``start()`` writes the configuration into ``workdir`` and runs ``binary -c mosquitto.conf``
    with its log in ``workdir/mosquitto.log``; ``stop()`` sends SIGTERM, then SIGKILL."""

    def __init__(self, pki: PkiDir, workdir: Path, *, binary: str, host: str, port: int) -> None:
        self._pki = pki
        self._workdir = workdir
        self._binary = binary
        self._host = host
        self._requested_port = port
        self.port = port
        self._process: asyncio.subprocess.Process | None = None

    @property
    def log_path(self) -> Path:
        return self._workdir / "mosquitto.log"

    async def start(self) -> None:
        attempts = 1 if self._requested_port else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or _free_port(self._host)
            conf = write_mosquitto_config(self._pki, self._workdir, port=port, bind=self._host)
            try:
                await self._spawn(conf, port)
            except _PortTaken:
                logger.info("port %d was taken before mosquitto bound it (attempt %d)", port, attempt)
                continue
            self.port = port
            return
        raise EmbeddedBrokerError(
            f"mosquitto could not bind a port on {self._host} after {attempts} attempts"
        )

    async def _spawn(self, conf: Path, port: int) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        try:
            process = await asyncio.create_subprocess_exec(
                self._binary,
                "-c",
                str(conf),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the broker
            )
        except OSError as exc:
            raise EmbeddedBrokerError(f"cannot run {self._binary}: {exc}") from exc
        finally:
            log.close()
        self._process = process
        try:
            await asyncio.wait_for(self._wait_listening(process, offset), _START_TIMEOUT)
        except TimeoutError:
            await self.stop()
            raise EmbeddedBrokerError(
                f"mosquitto did not listen on {self._host}:{port} within {_START_TIMEOUT:.0f} s; "
                f"log {self.log_path}:\n{_tail(self.log_path)}"
            ) from None
        except BaseException:
            await self.stop()
            raise

    async def _wait_listening(self, process: asyncio.subprocess.Process, offset: int) -> None:
        # Mosquitto logs "... running" once every listener is open; a bind failure ends the process.
        while True:
            text = _read_from(self.log_path, offset)
            if process.returncode is not None:
                self._process = None
                if "Address already in use" in text:
                    raise _PortTaken
                raise EmbeddedBrokerError(
                    f"mosquitto exited with status {process.returncode}; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if " running" in text:
                return
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
        except TimeoutError:
            logger.warning("mosquitto did not stop within %.0f s; killing it", _STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class _PortTaken(Exception):
    pass
