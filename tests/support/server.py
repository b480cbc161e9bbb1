"""The fleet server in tests: settings for a test broker, in-process, or as a subprocess.

settings = server_settings(db_url, pki=pki, broker=broker)     # or broker=None: API only
async with running_server(settings) as (app, base_url):         # real uvicorn, this loop
    ...
async with api_client(settings) as (client, runtime):           # lifespan + ASGITransport
    ...
async with connected_server(settings) as (client, runtime):     # the same, MQTT link connected
    await client.get(f"{V1}/devices", headers=bearer(token))
with ServerProcess(settings, tmp_path) as proc:                  # `fleetcare server run`
    proc.kill()                                                  # SIGKILL: no graceful stop
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from certs import PkiDir
from server import customers
from server.app import create_app
from server.base import users
from server.db.models import Role
from server.runtime import Runtime
from server.settings import ServerSettings, load_settings
from tests.support.broker import MosquittoBroker, free_port

__all__ = [
    "V1",
    "ServerProcess",
    "api_client",
    "bearer",
    "connected_server",
    "create_token",
    "running_server",
    "server_settings",
]

V1 = "/api/v1"


def server_settings(
    database_url: str,
    *,
    pki: PkiDir | None = None,
    broker: MosquittoBroker | None = None,
    client_id: str | None = None,
    mqtt: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> ServerSettings:
    """Settings for a test: the broker's address and the PKI's server identity and signing key
    when given; no MQTT at all when ``broker`` is None. ``mqtt`` adds or replaces fields of the
    broker connection (e.g. ``{"shared_group": None}``); ``overrides`` are settings fields."""
    values: dict[str, Any] = {"database_url": database_url, "ingest": {"batch_interval": 0.02}}
    if pki is not None:
        values["signing_key_file"] = pki.signing_key
    if broker is not None and pki is not None:
        values["mqtt"] = {
            "host": broker.host,
            "port": broker.port,
            "ca_file": pki.ca_cert,
            "cert_file": pki.server_client_cert,
            "key_file": pki.server_client_key,
            "client_id": client_id or f"fleetcare-test-{os.getpid()}-{time.monotonic_ns() % 10**9}",
            "reconnect_min": 0.05,
            "reconnect_max": 0.5,
            **(mqtt or {}),
        }
    else:
        values["mqtt"] = {"enabled": False}
    values.update(overrides)
    return load_settings(None, **values)


async def create_token(
    runtime: Runtime,
    name: str,
    role: Role,
    *,
    customer: int | str | None = None,
    assign: Sequence[int | str] = (),
    password: str | None = None,
) -> str:
    """Create a user with ``role`` and return a fresh API token for it. A ``customer`` user
    belongs to ``customer`` (default: a new customer named after the user); a technician is
    assigned to the customers in ``assign``."""
    async with runtime.sessions() as session:
        if role is Role.CUSTOMER and customer is None:
            customer = (await customers.create_customer(session, name=f"{name}-customer", actor="test")).id
        await users.create_user(session, name, role, actor="test", customer=customer, password=password)
        for each in assign:
            await users.assign(session, name, each, actor="test")
        return (await users.issue_token(session, name, actor="test")).token


@contextlib.asynccontextmanager
async def api_client(settings: ServerSettings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """The app with its lifespan running, and an httpx client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fleetcare.test") as client:
            yield client, app.state.runtime


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header for an API token."""
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def connected_server(
    settings: ServerSettings, *, timeout: float = 15.0
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """:func:`api_client`, entered once the server's MQTT link is connected (ingest running)."""
    async with api_client(settings) as (client, runtime):
        if runtime.link is not None:
            async with asyncio.timeout(timeout):
                await runtime.link.wait_connected()
        yield client, runtime


@contextlib.asynccontextmanager
async def running_server(settings: ServerSettings) -> AsyncIterator[tuple[FastAPI, str]]:
    """uvicorn serving the app on a free localhost port, in this event loop."""
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on", access_log=False)
    )
    task = asyncio.create_task(server.serve(), name="test.uvicorn")
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.01)
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):  # e.g. maintenance.forecast_targets: an array of inline tables
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(pairs) + "}"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(settings: ServerSettings, path: Path) -> Path:
    """``settings`` as a TOML file for ``fleetcare server run --config``."""
    data = settings.model_dump(mode="json", exclude_none=True)
    if settings.mqtt.shared_group is None:
        data["mqtt"]["shared_group"] = ""  # TOML has no null; "" means a plain subscription
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items() if not isinstance(value, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class ServerProcess:
    """``python -m server.cli run --config …`` in a subprocess; ``kill()`` is a SIGKILL."""

    def __init__(self, settings: ServerSettings, workdir: Path, *, start_timeout: float = 30.0) -> None:
        self.port = free_port()
        settings = settings.model_copy(update={"api": settings.api.model_copy(update={"port": self.port})})
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = write_config(settings, workdir / f"server-{self.port}.toml")
        self.log_path = workdir / f"server-{self.port}.log"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCARE_")}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=Path(__file__).resolve().parents[2],
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"server exited with {self._proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                body = httpx.get(f"{self.base_url}/api/v1/health", timeout=1).json()
                if body.get("mqtt"):
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server not healthy after {self.start_timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM: graceful shutdown (flush, ack, disconnect)."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL: no flush, no ack, no disconnect."""
        return self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: signal.Signals, timeout: float) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()
