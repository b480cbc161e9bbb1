"""The role x endpoint matrix: one row per ``/api/v1`` route with the roles allowed to use it.

The test fails when the app has a route the table does not list, so nobody can add an endpoint
without deciding who may call it. For every route and each of the five roles it calls the
endpoint (dummy ids, an empty JSON body): a role not in the row must get 403 (or 404: a customer
is told an object outside its scope does not exist); an allowed role must get anything but
401/403 (404/422 for a dummy id or body is fine). Without a token every non-public route is 401.

Rows marked ``PENDING`` belong to endpoints being added in parallel (remote sessions, guides):
they are skipped while their route is not registered. Runs on SQLite only: this is about the
routing and role checks, which do not depend on the backend (scope rules run on both backends
in test_roles_scope.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, routing

from server import customers
from server.app import create_app
from server.base import users
from server.db.models import Device, Role
from server.runtime import Runtime
from tests.support.databases import sqlite_url
from tests.support.server import V1, bearer, create_token, server_settings

A, T, O, C, P = Role.ADMIN, Role.TECHNICIAN, Role.OPS, Role.CUSTOMER, Role.PROVISIONING  # noqa: E741
ROLES = (A, T, O, C, P)
ALL = frozenset(ROLES)
PUBLIC = None  # no token needed at all


@dataclass(frozen=True)
class Row:
    allowed: frozenset[Role] | None  # None: public
    pending: bool = False  # an endpoint another helper is adding: skipped until registered


def row(*roles: Role, pending: bool = False) -> Row:
    return Row(frozenset(roles), pending)


MATRIX: dict[tuple[str, str], Row] = {
    # health and sign-in
    ("GET", "/health"): Row(PUBLIC),
    ("POST", "/auth/login"): Row(PUBLIC),
    ("POST", "/auth/logout"): row(*ALL),
    ("GET", "/auth/me"): row(*ALL),
    # users (admin only)
    ("GET", "/users"): row(A),
    ("POST", "/users"): row(A),
    ("GET", "/users/{name}"): row(A),
    ("PUT", "/users/{name}/password"): row(A),
    ("POST", "/users/{name}/disable"): row(A),
    ("POST", "/users/{name}/assignments/{customer_id}"): row(A),
    ("DELETE", "/users/{name}/assignments/{customer_id}"): row(A),
    # devices (scoped)
    ("GET", "/devices"): row(*ALL),
    ("GET", "/devices/{device_id}"): row(*ALL),
    ("GET", "/devices/{device_id}/telemetry"): row(*ALL),
    ("GET", "/devices/{device_id}/events"): row(*ALL),
    ("GET", "/devices/{device_id}/forecast"): row(*ALL),
    ("GET", "/devices/{device_id}/states"): row(A, T, O, C),
    ("GET", "/devices/{device_id}/transient-faults"): row(A, T, O, C),
    ("PATCH", "/devices/{device_id}"): row(A, T),
    ("POST", "/devices/{device_id}/revoke"): row(A),
    # commands
    ("POST", "/devices/{device_id}/commands"): row(A, T),
    ("GET", "/devices/{device_id}/commands"): row(A, T, O, P),
    ("GET", "/commands/{command_id}"): row(A, T, O, P),
    ("POST", "/commands/{command_id}/cancel"): row(A, T, pending=True),
    ("GET", "/commands/{command_id}/stream"): row(A, T, pending=True),
    ("GET", "/commands/{command_id}/file"): row(A, T, pending=True),
    ("GET", "/commands/{command_id}/output"): row(A, T, O, pending=True),
    # audit and ingest
    ("GET", "/audit"): row(A, O),
    ("GET", "/audit/verify"): row(A),
    ("GET", "/ingest/stats"): row(A, O),
    ("GET", "/ingest/quarantine"): row(A, O),
    # preventive maintenance
    ("GET", "/rules"): row(A, T, O),
    ("POST", "/rules"): row(A, T),
    ("GET", "/rules/alerts"): row(A, T, O),
    ("GET", "/rules/{rule_id}"): row(A, T, O),
    ("PATCH", "/rules/{rule_id}"): row(A, T),
    ("DELETE", "/rules/{rule_id}"): row(A, T),
    # KPIs (a customer's forced to its own customer, a technician's to an assigned one)
    ("GET", "/kpis"): row(A, T, O, C),
    ("GET", "/kpis/definitions"): row(*ALL),
    # incidents
    ("GET", "/incidents"): row(A, T, O, C),
    ("GET", "/incidents/{incident_id}"): row(A, T, O, C),
    ("PATCH", "/incidents/{incident_id}"): row(A, T),
    **{
        ("POST", f"/incidents/{{incident_id}}/{verb}"): row(A, T)
        for verb in ("ack", "assign", "dispatch", "guidance", "resolve", "reopen", "close")
    },
    # customers and sites
    ("GET", "/customers"): row(A, T, O),
    ("POST", "/customers"): row(A, T),
    ("GET", "/customers/{customer_id}"): row(A, T, O),
    ("PATCH", "/customers/{customer_id}"): row(A, T),
    ("GET", "/customers/{customer_id}/sites"): row(A, T, O),
    ("POST", "/customers/{customer_id}/sites"): row(A, T),
    ("PATCH", "/customers/{customer_id}/sites/{site_id}"): row(A, T),
    ("GET", "/unassigned-devices"): row(A, T, O),
    # remote sessions (helper C)
    ("POST", "/sessions"): row(A, T, pending=True),
    ("GET", "/sessions"): row(A, T, O, pending=True),
    ("GET", "/sessions/{session_id}"): row(A, T, O, pending=True),
    ("POST", "/sessions/{session_id}/commands"): row(A, T, pending=True),
    ("POST", "/sessions/{session_id}/consent"): row(A, T, pending=True),
    ("POST", "/sessions/{session_id}/close"): row(A, T, pending=True),
    ("GET", "/sessions/{session_id}/report"): row(A, T, O, pending=True),
    # guided self-resolution (helper C)
    ("GET", "/guides"): row(A, T, O, pending=True),
    ("POST", "/guides"): row(A, T, pending=True),
    ("GET", "/incidents/{incident_id}/guides"): row(A, T, C, pending=True),
    ("POST", "/incidents/{incident_id}/guide-runs"): row(A, T, C, pending=True),
    ("POST", "/guide-runs/{run_id}/steps"): row(A, T, C, pending=True),
    ("POST", "/guide-runs/{run_id}/finish"): row(A, T, C, pending=True),
    # knowledge base (helper H): customers read published customer-safe articles only
    ("GET", "/knowledge/articles"): row(A, T, O, C),
    ("POST", "/knowledge/articles"): row(A, T),
    ("GET", "/knowledge/articles/{article_id}"): row(A, T, O, C),
    ("PATCH", "/knowledge/articles/{article_id}"): row(A, T),
    ("POST", "/knowledge/articles/{article_id}/publish"): row(A, T),
    ("POST", "/knowledge/articles/{article_id}/retire"): row(A, T),
    ("GET", "/knowledge/search"): row(A, T, O, C),
    ("GET", "/incidents/{incident_id}/suggestions"): row(A, T, O),
    ("POST", "/incidents/{incident_id}/suggestions/{article_id}/apply"): row(A, T),
}

DEVICE = "matrix-dev-1"  # the customer's device: in every role's scope
DUMMY = {
    "device_id": DEVICE,
    "incident_id": "999999",
    "command_id": "no-such-command",
    "rule_id": "999999",
    "site_id": "999999",
    "name": "no-such-user",
    "session_id": "ses_nosuchsession",
    "run_id": "999999",
    "article_id": "999999",
}
NAMES = {A: "m-admin", T: "m-tech", O: "m-ops", C: "m-customer", P: "m-prov"}
QUERY = {"from": "2026-03-02", "to": "2026-03-09"}  # /kpis needs a period; others refuse it


@dataclass
class World:
    app: FastAPI
    client: httpx.AsyncClient
    runtime: Runtime
    tokens: dict[Role, str]
    customer_id: int


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = server_settings(sqlite_url(tmp_path / "matrix.db"), incidents={"enabled": False})
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fleetcare.test") as client,
    ):
        runtime: Runtime = app.state.runtime
        async with runtime.sessions() as session:
            customer = await customers.create_customer(session, name="matrix-customer", actor="test")
            session.add(Device(id=DEVICE, customer_id=customer.id))
            await session.commit()
        tokens = {
            role: await create_token(
                runtime,
                NAMES[role],
                role,
                customer=customer.id if role is C else None,
                assign=[customer.id] if role is T else (),
            )
            for role in ROLES
        }
        yield World(app, client, runtime, tokens, customer.id)


def api_routes(world: World) -> set[tuple[str, str]]:
    found = set()
    for route in routing.iter_route_contexts(world.app.routes):  # through included routers
        if route.path.startswith(V1):
            found |= {(method, route.path.removeprefix(V1)) for method in route.methods or {"WEBSOCKET"}}
    return found


def url(world: World, path: str) -> str:
    values = {**DUMMY, "customer_id": str(world.customer_id)}
    return V1 + path.format(**values)


async def call(world: World, method: str, path: str, token: str | None) -> httpx.Response:
    headers = bearer(token) if token is not None else {}
    body = {"json": {}} if method in {"POST", "PUT", "PATCH"} else {}
    return await world.client.request(
        method,
        url(world, path),
        headers=headers,
        params=QUERY if path == "/kpis" else None,
        timeout=10,
        **body,
    )


async def test_every_api_route_is_in_the_matrix(world: World) -> None:
    routes = api_routes(world)
    missing = sorted(routes - MATRIX.keys())
    assert not missing, f"add these routes to MATRIX with the roles allowed: {missing}"
    stale = sorted(key for key, spec in MATRIX.items() if key not in routes and not spec.pending)
    assert not stale, f"MATRIX rows for routes that no longer exist: {stale}"


async def test_each_role_gets_exactly_what_the_matrix_allows(world: World) -> None:
    routes = api_routes(world)
    wrong: list[str] = []
    for (method, path), spec in MATRIX.items():
        if (method, path) not in routes:
            continue  # pending
        if spec.allowed is None:
            answer = await call(world, method, path, None)
            if answer.status_code in {401, 403}:
                wrong.append(f"{method} {path} public: {answer.status_code}")
            continue
        anonymous = await call(world, method, path, None)
        if anonymous.status_code != 401:
            wrong.append(f"{method} {path} without a token: {anonymous.status_code}, want 401")
        for role in ROLES:
            token = world.tokens[role]
            if path == "/auth/logout":  # it revokes the calling token: use a throwaway one
                async with world.runtime.sessions() as session:
                    token = (await users.issue_token(session, NAMES[role], actor="test")).token
            answer = await call(world, method, path, token)
            if role in spec.allowed:
                if answer.status_code in {401, 403}:
                    wrong.append(f"{method} {path} as {role.value}: {answer.status_code} {answer.text[:120]}")
            elif answer.status_code not in {403, 404}:
                wrong.append(f"{method} {path} as {role.value}: {answer.status_code}, want 403/404")
    assert not wrong, "\n".join(wrong)
