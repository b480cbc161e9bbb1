"""``EmbeddedBroker``: a local MQTT broker with the production security semantics.

    async with EmbeddedBroker(pki, workdir) as broker:
        print(broker.kind, broker.host, broker.port, broker.supports_shared_subscriptions)

Mosquitto when its binary is on PATH (MQTT 5, shared subscriptions, about ten times faster),
else amqtt in this process (MQTT 3.1.1 only, no shared subscriptions). Both: mutual TLS with the
fleet CA, identity = certificate CN = username, the fleet ACL. Choice and figures:
docs/embedded-broker.md.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from certs import PID_FILE_NAME, SERVER_IDENTITY, PkiDir
from server.embedded_broker.amqtt_broker import AmqttBroker
from server.embedded_broker.errors import EmbeddedBrokerError
from server.embedded_broker.mosquitto import MosquittoBroker

__all__ = ["BrokerKind", "EmbeddedBroker", "Preference", "mosquitto_binary"]

logger = logging.getLogger(__name__)

BrokerKind = Literal["mosquitto", "amqtt"]
Preference = Literal["auto", "mosquitto", "amqtt"]


def mosquitto_binary() -> str | None:
    """Path of the ``mosquitto`` executable on PATH (or in /usr/sbin), if any."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


class EmbeddedBroker:
    """Async context manager running one broker; ``host``, ``port``, ``kind`` are set on entry."""

    def __init__(
        self,
        pki: PkiDir,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prefer: Preference = "auto",
        server_identity: str = SERVER_IDENTITY,
    ) -> None:
        if prefer not in ("auto", "mosquitto", "amqtt"):
            raise EmbeddedBrokerError(
                f"unknown broker preference {prefer!r}: expected auto, mosquitto or amqtt"
            )
        if not 0 <= port < 65536:
            raise EmbeddedBrokerError(f"invalid port {port}")
        self._pki = pki
        self._workdir = Path(workdir)
        self.host = host
        self.port = port
        self._prefer = prefer
        self._server_identity = server_identity
        self._impl: MosquittoBroker | AmqttBroker | None = None
        self.kind: BrokerKind | None = None

    @property
    def supports_shared_subscriptions(self) -> bool:
        """Whether ``$share/<group>/<filter>`` works (MQTT 5 and Mosquitto's 3.1.1 extension)."""
        return self.kind == "mosquitto"

    @property
    def supports_mqtt5(self) -> bool:
        return self.kind == "mosquitto"

    @property
    def access_files(self) -> tuple[Path, Path] | None:
        """Mosquitto's ACL file and pid file, for the fleet server's access sync
        (server/broker_access.py); None for amqtt, whose ACL lives in the process."""
        if isinstance(self._impl, MosquittoBroker):
            return self._workdir / "acl", self._workdir / PID_FILE_NAME
        return None

    @property
    def log_path(self) -> Path | None:
        """Mosquitto's log file; None for amqtt, which logs through :mod:`logging`."""
        return self._impl.log_path if isinstance(self._impl, MosquittoBroker) else None

    async def __aenter__(self) -> Self:
        if self._impl is not None:
            raise EmbeddedBrokerError("broker already running")
        for path in (self._pki.ca_cert, self._pki.broker_cert, self._pki.broker_key):
            if not path.exists():
                raise EmbeddedBrokerError(f"missing {path}: initialise the PKI first (fleetcare certs init)")
        self._workdir.mkdir(parents=True, exist_ok=True)
        binary = mosquitto_binary()
        if self._prefer == "mosquitto" and binary is None:
            raise EmbeddedBrokerError("mosquitto was asked for but no 'mosquitto' binary is on PATH")
        if self._prefer != "amqtt" and binary is not None:
            try:
                await self._start_mosquitto(binary)
            except EmbeddedBrokerError as exc:
                if self._prefer == "mosquitto":
                    raise
                logger.warning("mosquitto failed to start, falling back to amqtt: %s", exc)
            else:
                return self
        await self._start_amqtt()
        return self

    async def _start_mosquitto(self, binary: str) -> None:
        impl = MosquittoBroker(self._pki, self._workdir, binary=binary, host=self.host, port=self.port)
        await impl.start()
        self._impl, self.kind, self.port = impl, "mosquitto", impl.port
        logger.info("embedded broker: mosquitto on %s:%d (log %s)", self.host, self.port, impl.log_path)

    async def _start_amqtt(self) -> None:
        impl = AmqttBroker(self._pki, host=self.host, port=self.port, server_identity=self._server_identity)
        try:
            await impl.start()
        except Exception as exc:
            raise EmbeddedBrokerError(f"amqtt failed to start on {self.host}:{self.port}: {exc}") from exc
        self._impl, self.kind, self.port = impl, "amqtt", impl.port
        logger.info("embedded broker: amqtt on %s:%d", self.host, self.port)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        impl, self._impl = self._impl, None
        if impl is not None:
            await impl.stop()
