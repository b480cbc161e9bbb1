"""Helpers for agent tests (unit and integration): settings, keys, manual clock, a server stand-in.

The fake equipment plugin lives in :mod:`tests.support.equipment` (shared with the end-to-end
tests) and is re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import AgentSettings
from tests.support.equipment import FakePlugin, fake_factory

__all__ = [
    "FakePlugin",
    "ManualClock",
    "ServerSide",
    "closed_port",
    "device_settings",
    "fake_factory",
    "make_settings",
    "write_public_key",
]


def write_public_key(key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def closed_port() -> int:
    """A localhost port nobody listens on (connection refused at once)."""
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def make_settings(
    tmp_path: Path,
    *,
    device_id: str = "dev-1",
    server_key_file: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    tls: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> AgentSettings:
    """Settings for a test agent. Without ``tls``: plaintext to a closed port (offline agent)."""
    data: dict[str, Any] = {
        "device_id": device_id,
        "broker": {
            "host": host,
            "port": port or closed_port(),
            "allow_plaintext": tls is None,
            "connect_timeout": 5,
        },
        "server_key_file": server_key_file,
        "data_dir": tmp_path / f"data-{device_id}",
        "reconnect": {"initial": 0.05, "max": 0.5},
        "collect_system_metrics": False,
        "shutdown_grace": 1.0,
    }
    if tls is not None:
        data["tls"] = dict(tls)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return AgentSettings.model_validate(data)


class ManualClock:
    """A clock that only moves when told: ``await clock.advance(seconds)``."""

    def __init__(self, start: datetime = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)) -> None:
        self._now = start
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self.sleeping = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), next(self._counter), future))
        self.sleeping.set()
        await future

    async def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        for _ in range(5):  # let the woken tasks run
            await asyncio.sleep(0)


class ServerSide:
    """Plays the fleet server in integration tests: the server identity on the broker, a
    command signer over the fleet's signing key, and every uplink message of one device."""

    def __init__(self, broker: Any, pki: Any, device_id: str, *, confirm: bool = False) -> None:
        """``confirm``: answer every message with a delivery receipt, as the fleet server does
        (server/ingest/receipts.py); without, the agent keeps what the broker acknowledged."""
        from protocol import CommandSigner, load_private_key  # noqa: PLC0415

        self.confirm = confirm
        self.broker = broker
        self.pki = pki
        self.device_id = device_id
        self.signer = CommandSigner(load_private_key(Path(pki.signing_key).read_bytes()))
        self.received: list[tuple[Any, bool]] = []  # (decoded message, retained flag)
        self._changed = asyncio.Condition()
        self._client: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ServerSide:
        import uuid  # noqa: PLC0415

        import aiomqtt  # noqa: PLC0415

        from tests.support.broker import spare_server_identity, tls_context  # noqa: PLC0415

        self._client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            tls_context=tls_context(self.pki, spare_server_identity()),
            identifier=f"test-server-{uuid.uuid4().hex[:8]}",
        )
        await self._client.__aenter__()
        await self._client.subscribe(f"fc/v1/d/{self.device_id}/up/#", qos=1)
        self._reader = asyncio.create_task(self._read(), name=f"test-server[{self.device_id}].reader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._reader is not None
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(Exception):
            await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        from protocol import Receipt, decode_uplink, encode, receipt_topic  # noqa: PLC0415

        async for message in self._client.messages:
            decoded = decode_uplink(message.topic.value, message.payload)
            if self.confirm:
                receipt = Receipt(device_id=self.device_id, ranges=[(decoded.seq, decoded.seq)])
                await self._client.publish(receipt_topic(self.device_id), encode(receipt), qos=0)
            async with self._changed:
                self.received.append((decoded, bool(message.retain)))
                self._changed.notify_all()

    def messages(self, kind: type[Any] | None = None) -> list[Any]:
        return [m for m, _ in self.received if kind is None or isinstance(m, kind)]

    async def wait_for(self, predicate: Callable[[Any], bool]) -> Any:
        """The first received message matching ``predicate`` (waits for it to arrive)."""
        async with self._changed:
            await self._changed.wait_for(lambda: any(predicate(m) for m, _ in self.received))
            return next(m for m, _ in self.received if predicate(m))

    async def wait_count(self, predicate: Callable[[Any], bool], count: int) -> list[Any]:
        async with self._changed:
            await self._changed.wait_for(lambda: sum(1 for m, _ in self.received if predicate(m)) >= count)
            return [m for m, _ in self.received if predicate(m)]

    def sign(self, action: str = "ping", **kw: Any) -> Any:
        params: dict[str, Any] = {
            "device_id": self.device_id,
            "action": action,
            "issuer": "test-technician",
            "ttl": timedelta(minutes=5),
        }
        params.update(kw)
        return self.signer.sign(**params)

    async def send(self, command: Any) -> None:
        from protocol import command_topic, encode  # noqa: PLC0415

        payload = command if isinstance(command, bytes) else encode(command)
        await self._client.publish(command_topic(self.device_id), payload, qos=1)

    async def replies(self, command_id: str, *, until: str = "result") -> list[Any]:
        """Every reply to ``command_id`` once one of type ``until`` has arrived."""
        from protocol import Reply  # noqa: PLC0415

        await self.wait_for(
            lambda m: isinstance(m, Reply) and m.command_id == command_id and m.type.value == until
        )
        return [m for m in self.messages(Reply) if m.command_id == command_id]


def device_settings(tmp_path: Path, pki: Any, broker: Any, device_id: str, **overrides: Any) -> AgentSettings:
    """Settings for a real device identity against the test broker (mutual TLS)."""
    return make_settings(
        tmp_path,
        device_id=device_id,
        server_key_file=Path(pki.signing_pub),
        host=broker.host,
        port=broker.port,
        tls={
            "ca_file": pki.ca_cert,
            "cert_file": pki.device_cert(device_id),
            "key_file": pki.device_key(device_id),
        },
        **overrides,
    )
