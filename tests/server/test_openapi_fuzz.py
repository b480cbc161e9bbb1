"""Schemathesis over every operation of the server's OpenAPI document (issue 13): no request,
valid or not, gets a 500, and no response breaks the documented schema.

The app runs in-process (schemathesis' ASGI transport, lifespan included) on a temporary
SQLite file with a few rows to find, called as an admin so that every route is reached.
Reproducible: Hypothesis is derandomized (the same cases on every run and in CI) and each
operation gets a handful of examples, positive and negative, which keeps the file near a
minute on two cores. A failure prints the request; reproduce it with a plain test in
tests/server/test_api_edge.py, then fix the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from server import customers
from server.app import create_app
from server.base import users
from server.db import create_engine, create_sessionmaker, run_migrations
from server.db.models import Device, Role
from server.db.types import utcnow
from server.settings import load_settings
from tests.support.databases import sqlite_url

EXAMPLES = 6  # per operation; every operation also gets its schema's examples and edge values

# Operations a fuzzer cannot judge, each with why; everything else is fuzzed.
EXCLUDED = {
    # revokes the token of the request: every later case would be a 401
    ("POST", "/api/v1/auth/logout"),
    # Argon2id on purpose (0.1 s of CPU per attempt): six attempts are a second of nothing new;
    # the sign-in edge is tests/server/test_auth.py
    ("POST", "/api/v1/auth/login"),
    # the audit walk reads every entry and seals; fuzzing it only re-reads the log
    ("GET", "/api/v1/audit/verify"),
}


async def _seed(url: str) -> str:
    """An admin token, a customer with a site, and a device assigned to it."""
    engine = create_engine(url)
    try:
        sessions = create_sessionmaker(engine)
        async with sessions() as session:
            customer = await customers.create_customer(session, name="acme", actor="fuzz")
            site = await customers.create_site(session, customer.id, name="north", actor="fuzz")
            session.add(
                Device(
                    id="fuzz-1", first_seen=utcnow(), model="LX-9", customer_id=customer.id, site_id=site.id
                )
            )
            await session.commit()
            await users.create_user(session, "fuzz-admin", Role.ADMIN, actor="fuzz")
            return (await users.issue_token(session, "fuzz-admin", actor="fuzz")).token
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def admin_token_and_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    url = sqlite_url(Path(tmp_path_factory.mktemp("fuzz")) / "fleetcare.db")
    run_migrations(url)
    token = asyncio.run(_seed(url))
    app = create_app(load_settings(None, database_url=url, mqtt={"enabled": False}), migrate=False)
    try:
        yield token, app
    finally:
        asgi.shutdown_lifespans()  # the lifespan schemathesis started: engine disposed before the file goes


def _document() -> dict[str, Any]:
    """The OpenAPI document, from an app that is never started (no database is touched)."""
    settings = load_settings(None, database_url="sqlite+aiosqlite:///unused.db", mqtt={"enabled": False})
    return create_app(settings, migrate=False).openapi()


schema = schemathesis.openapi.from_dict(_document())
for _method, _path in EXCLUDED:
    schema = schema.exclude(method=_method, path=_path)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    database=None,
)
def test_no_500_and_every_response_as_documented(
    case: schemathesis.Case, admin_token_and_app: tuple[str, Any]
) -> None:
    token, app = admin_token_and_app
    case.call_and_validate(
        app=app,
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error, response_schema_conformance],
    )


def test_every_exclusion_names_an_operation() -> None:
    """An exclusion outliving its route would hide nothing and mislead the reader."""
    document = _document()
    missing = {
        (method, path) for method, path in EXCLUDED if method.lower() not in document["paths"].get(path, {})
    }
    assert not missing, f"EXCLUDED names operations that no longer exist: {sorted(missing)}"
