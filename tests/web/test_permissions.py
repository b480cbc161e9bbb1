"""One permissions table for the API and the console (issue 14, item 5).

- every capability of ``server.base.permissions`` has exactly the roles of the ``/api/v1``
  routes that stand for it in the API's role matrix (tests/server/test_roles_matrix.py, which
  checks the matrix against the running app), so the table is the API's rules;
- ``require_role`` refuses a combination of roles the table has no row for;
- the console's pages refuse and link by the same table, role by role;
- the console calls no API handler: no module of ``server.web`` holds an API router module or
  an endpoint function;
- the two rules still copied in the API (the KPI report's customer, the SSE text of a command
  stream) give the same answers as the shared functions the console calls.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any

import pytest
from fastapi import routing

import server.web
from server.api import commands as commands_api
from server.api import deps
from server.api import kpis as kpis_api
from server.app import create_app
from server.base import permissions, users
from server.base.permissions import Capability
from server.base.report_scope import report_customer
from server.commands.sse import event_text
from server.db.models import Role
from server.errors import ServerError
from tests.server.test_roles_matrix import MATRIX
from tests.support.databases import sqlite_url
from tests.support.server import V1, bearer, server_settings
from tests.web.support import Console, sign_in, token_for

A, T, O, C, P = Role.ADMIN, Role.TECHNICIAN, Role.OPS, Role.CUSTOMER, Role.PROVISIONING  # noqa: E741

ROUTES: dict[Capability, list[tuple[str, str]]] = {
    Capability.READ_FLEET: [
        ("GET", "/devices"),
        ("GET", "/devices/{device_id}"),
        ("GET", "/devices/{device_id}/telemetry"),
        ("GET", "/devices/{device_id}/events"),
        ("GET", "/devices/{device_id}/forecast"),
    ],
    Capability.READ_KPIS: [("GET", "/kpis")],
    Capability.READ_INCIDENTS: [
        ("GET", "/incidents"),
        ("GET", "/incidents/{incident_id}"),
        ("GET", "/devices/{device_id}/states"),
        ("GET", "/devices/{device_id}/transient-faults"),
    ],
    Capability.ACT_ON_INCIDENTS: [
        ("PATCH", "/incidents/{incident_id}"),
        *(
            ("POST", f"/incidents/{{incident_id}}/{verb}")
            for verb in ("ack", "assign", "dispatch", "guidance", "resolve", "reopen", "close")
        ),
    ],
    Capability.READ_CUSTOMERS: [
        ("GET", "/customers"),
        ("GET", "/customers/{customer_id}"),
        ("GET", "/customers/{customer_id}/sites"),
        ("GET", "/unassigned-devices"),
    ],
    Capability.MANAGE_CUSTOMERS: [
        ("POST", "/customers"),
        ("PATCH", "/customers/{customer_id}"),
        ("POST", "/customers/{customer_id}/sites"),
        ("PATCH", "/customers/{customer_id}/sites/{site_id}"),
        ("PATCH", "/devices/{device_id}"),
    ],
    Capability.READ_RULES: [("GET", "/rules"), ("GET", "/rules/alerts"), ("GET", "/rules/{rule_id}")],
    Capability.MANAGE_RULES: [
        ("POST", "/rules"),
        ("PATCH", "/rules/{rule_id}"),
        ("DELETE", "/rules/{rule_id}"),
    ],
    Capability.SEND_COMMANDS: [
        ("POST", "/devices/{device_id}/commands"),
        ("POST", "/commands/{command_id}/cancel"),
        ("GET", "/commands/{command_id}/stream"),
        ("GET", "/commands/{command_id}/file"),
    ],
    Capability.READ_COMMANDS: [("GET", "/devices/{device_id}/commands"), ("GET", "/commands/{command_id}")],
    Capability.READ_COMMAND_OUTPUT: [("GET", "/commands/{command_id}/output")],
    Capability.READ_SESSIONS: [
        ("GET", "/sessions"),
        ("GET", "/sessions/{session_id}"),
        ("GET", "/sessions/{session_id}/report"),
    ],
    Capability.RUN_SESSIONS: [
        ("POST", "/sessions"),
        ("POST", "/sessions/{session_id}/commands"),
        ("POST", "/sessions/{session_id}/consent"),
        ("POST", "/sessions/{session_id}/close"),
    ],
    Capability.READ_GUIDES: [("GET", "/guides")],
    Capability.WRITE_GUIDES: [("POST", "/guides")],
    Capability.RUN_GUIDES: [
        ("GET", "/incidents/{incident_id}/guides"),
        ("POST", "/incidents/{incident_id}/guide-runs"),
        ("POST", "/guide-runs/{run_id}/steps"),
        ("POST", "/guide-runs/{run_id}/finish"),
    ],
    Capability.READ_KNOWLEDGE: [
        ("GET", "/knowledge/articles"),
        ("GET", "/knowledge/articles/{article_id}"),
        ("GET", "/knowledge/search"),
    ],
    Capability.WRITE_KNOWLEDGE: [
        ("POST", "/knowledge/articles"),
        ("PATCH", "/knowledge/articles/{article_id}"),
        ("POST", "/knowledge/articles/{article_id}/publish"),
        ("POST", "/knowledge/articles/{article_id}/retire"),
        ("POST", "/incidents/{incident_id}/suggestions/{article_id}/apply"),
    ],
    Capability.READ_SUGGESTIONS: [("GET", "/incidents/{incident_id}/suggestions")],
    Capability.READ_AUDIT: [("GET", "/audit")],
    Capability.READ_INGEST: [("GET", "/ingest/stats"), ("GET", "/ingest/quarantine")],
    Capability.VERIFY_AUDIT: [("GET", "/audit/verify")],
    Capability.MANAGE_USERS: [
        ("GET", "/users"),
        ("POST", "/users"),
        ("GET", "/users/{name}"),
        ("PUT", "/users/{name}/password"),
        ("POST", "/users/{name}/disable"),
        ("POST", "/users/{name}/assignments/{customer_id}"),
        ("DELETE", "/users/{name}/assignments/{customer_id}"),
    ],
    Capability.MANAGE_DEVICE_ACCESS: [("POST", "/devices/{device_id}/revoke")],
}


@pytest.mark.parametrize("capability", list(Capability))
def test_each_capability_has_the_roles_of_its_api_routes(capability: Capability) -> None:
    routes = ROUTES[capability]
    assert routes, f"{capability}: name the /api/v1 routes that stand for it"
    for route in routes:
        assert MATRIX[route].allowed == permissions.roles_for(capability), (capability, route)


def test_role_checked_api_routes_are_all_in_the_table() -> None:
    """Every route of the matrix that is not for any signed-in user is some capability's."""
    named = {route for routes in ROUTES.values() for route in routes}
    everyone = frozenset(Role)
    gated = {route for route, row in MATRIX.items() if row.allowed not in (None, everyone)}
    assert gated <= named, sorted(gated - named)


def test_admin_has_every_capability_and_the_checks_say_who_may() -> None:
    admin = users.Principal(user_id=1, name="a", role=A)
    ops = users.Principal(user_id=2, name="o", role=O)
    assert all(permissions.allows(admin, capability) for capability in Capability)
    assert permissions.check(ops, Capability.READ_AUDIT) is ops
    with pytest.raises(ServerError, match=r"role 'ops' may not do this \(needs one of: admin, technician\)"):
        permissions.check(ops, Capability.RUN_SESSIONS)


def test_require_role_refuses_a_combination_the_table_does_not_name() -> None:
    assert permissions.capability_with([O]) is Capability.READ_AUDIT
    assert permissions.capability_with([]) is Capability.VERIFY_AUDIT
    deps.require_role(T, O)  # a row: fine
    with pytest.raises(ValueError, match="no capability is held by exactly"):
        deps.require_role(C, P)


async def test_api_and_pages_read_the_table_at_request_time(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Give customers the audit log in the table alone: the API and the page both let them in."""
    await sign_in(console.client, "carl")
    token = await token_for(console, "carl")
    assert (await console.client.get(f"{V1}/audit", headers=bearer(token))).status_code == 403
    assert (await console.client.get("/audit")).status_code == 403
    monkeypatch.setitem(permissions._TABLE, Capability.READ_AUDIT, frozenset({A, O, C}))
    assert (await console.client.get(f"{V1}/audit", headers=bearer(token))).status_code == 200
    page = await console.client.get("/audit")
    assert page.status_code == 200
    assert 'href="/audit"' in page.text  # and the navigation links it


PAGES: list[tuple[str, Capability]] = [("/", Capability.READ_KPIS), ("/audit", Capability.READ_AUDIT)]
USERS = {"olga": O, "tina": T, "carl": C, "ada": A}


@pytest.mark.parametrize("name", list(USERS))
async def test_pages_refuse_and_link_by_the_table(console: Console, name: str) -> None:
    await sign_in(console.client, name)
    principal = users.Principal(user_id=0, name=name, role=USERS[name])
    fleet = await console.client.get("/fleet")
    for path, capability in PAGES:
        answer = await console.client.get(path)
        may = permissions.allows(principal, capability)
        assert answer.status_code == (200 if may else 403), (name, path, answer.text[:300])
        assert (f'href="{path}"' in fleet.text) is may, (name, path)


def _web_modules() -> list[ModuleType]:
    found = [server.web]
    for info in pkgutil.walk_packages(server.web.__path__, "server.web."):
        found.append(importlib.import_module(info.name))
    return found


def test_the_console_calls_no_api_handler(tmp_path: Any) -> None:
    app = create_app(server_settings(sqlite_url(tmp_path / "h.db"), incidents={"enabled": False}))
    endpoints = {
        id(route.endpoint): route.endpoint  # by identity: module attributes are not all hashable
        for route in routing.iter_route_contexts(app.routes)
        if route.path.startswith(V1)
    }
    assert len(endpoints) > 50
    routers = {"server.api." + name for name in ("audit", "commands", "devices", "forecast", "incidents")}
    routers |= {"server.api." + name for name in ("knowledge", "kpis", "customers", "rules", "guides")}
    modules = _web_modules()
    assert len(modules) > 10
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("__"):
                continue
            assert id(value) not in endpoints, f"{module.__name__}.{name} is an API handler"
            assert not (isinstance(value, ModuleType) and value.__name__ in routers), (
                f"{module.__name__} holds the API router module {value.__name__}"
            )


def test_the_api_and_the_console_share_the_report_scope_and_the_stream_text() -> None:
    """One rule each, not two copies held equal: the KPI API scopes reports with the same
    function as the console, and the command stream API writes the same SSE text."""
    assert kpis_api.report_customer is report_customer
    assert commands_api.event_text is event_text
