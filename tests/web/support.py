"""Helpers of the console's HTTP tests: a signed-in client, CSRF tokens, API tokens, incidents."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from server.db.models import Incident
from server.db.types import utcnow
from server.runtime import Runtime
from tests.support.server import V1
from tests.web.seed import PASSWORD, Seeded

__all__ = ["Console", "csrf_of", "open_incident", "sign_in", "token_for"]


@dataclass
class Console:
    client: httpx.AsyncClient
    runtime: Runtime
    seeded: Seeded


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the form"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, name: str) -> str:
    """Sign in through the form; returns the page's CSRF token for later POSTs."""
    form = await client.get("/login")
    answer = await client.post(
        "/login",
        data={"csrf": csrf_of(form.text), "username": name, "password": PASSWORD, "next": "/fleet"},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/fleet"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    return csrf_of((await client.get("/fleet")).text)


async def token_for(console: Console, name: str) -> str:
    answer = await console.client.post(f"{V1}/auth/login", json={"username": name, "password": PASSWORD})
    token: str = answer.json()["token"]
    return token


async def open_incident(console: Console, device_id: str) -> int:
    now = utcnow()
    async with console.runtime.sessions() as session:
        incident = Incident(
            device_id=device_id, kind="fault", severity="error", effect="down", t_fault=now, t_detect=now
        )
        session.add(incident)
        await session.commit()
        return incident.id
