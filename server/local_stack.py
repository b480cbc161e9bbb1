"""The pieces of a fleet on one machine that the demo and the simulators' runs both compose:
the PKI (created once), the fleet server's API served in this event loop, an admin token (and
password).

The embedded broker is :mod:`server.embedded_broker`; the simulated fleet is
:mod:`simulators.fleet`. ``fleetcare demo`` (server/demo.py) and ``fleetcare sim run``
(simulators/run.py) put them together, each in its own way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from certs import PkiDir, init_pki
from server.base import users
from server.db.models import Role
from server.errors import Conflict

__all__ = ["API_START_TIMEOUT", "LocalStackError", "admin_token", "ensure_pki", "serve_api"]

logger = logging.getLogger(__name__)

API_START_TIMEOUT = 60.0
"""Seconds the server's API may take to start (migrations included)."""


class LocalStackError(Exception):
    """A local part could not start; the message says which and why."""


def ensure_pki(root: Path) -> PkiDir:
    """The fleet PKI in ``root``, created the first time (reused afterwards: agents keep trusting it)."""
    pki = PkiDir(root)
    if pki.ca_cert.exists() and pki.ca_key.exists():
        return pki
    logger.info("creating the demo PKI in %s", root)
    return init_pki(root)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the demo stops the parts in its own order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn calls sys.exit() when the app's lifespan fails to start; in a task that would
        # escape the event loop and skip every teardown. ``started`` stays False instead.
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            self.should_exit = True


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LocalStackError(f"cannot listen on {host}:{port} for the API: {exc.strerror}") from exc
    return sock


@contextlib.asynccontextmanager
async def serve_api(app: FastAPI, host: str, port: int, *, name: str = "local.api") -> AsyncIterator[int]:
    """uvicorn in this event loop on a socket we bound (so a busy port is a clear error)."""
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    server = _Server(
        uvicorn.Config(app, log_config=None, lifespan="on", access_log=False, timeout_graceful_shutdown=5)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]), name=name)
    try:
        async with asyncio.timeout(API_START_TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()
                    raise LocalStackError("the fleet server did not start (see the log above)")
                await asyncio.sleep(0.02)
        yield bound_port
    finally:
        server.should_exit = True
        try:
            await task
        finally:
            sock.close()


async def admin_token(app: FastAPI, user: str = "admin", *, actor: str, password: str | None = None) -> str:
    """A fresh API token of the admin ``user`` of the app's server (created if missing). With
    ``password`` the user signs in to the web console with it: set, or reset if it had another."""
    runtime = app.state.runtime
    async with runtime.sessions() as session:
        try:
            await users.create_user(session, user, Role.ADMIN, actor=actor, password=password)
        except Conflict:
            if password is not None:
                await users.set_password(session, user, password, actor=actor)
    async with runtime.sessions() as session:
        issued = await users.issue_token(session, user, actor=actor)
    return issued.token
