"""Who may do what: one table of capabilities and the roles that have each (admin has all).

Both doors read it: the API's role dependency (``server.api.deps.require`` and
``require_role``) and the console's pages (``server/web/pages``), so a page and the endpoint it
stands for cannot disagree about a role. Which *devices* a caller reaches is the other half of
access, ``server.base.access``; this table only says which kinds of action a role may take.

It lives in ``server.base`` (next to users and access, importing only ``server.db.models`` and
``server.errors``) rather than in ``server.api``: the console, the CLI and the API are all
callers of the rules, none of them their owner.

Every ``/api/v1`` route's roles are in tests/server/test_roles_matrix.py; the capabilities the
console uses are checked against those rows in tests/web/test_permissions.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

from server.base.users import Principal
from server.db.models import Role
from server.errors import Forbidden

__all__ = ["PERMISSIONS", "Capability", "allows", "capability_with", "check", "roles_for"]

A, T, O, C, P = Role.ADMIN, Role.TECHNICIAN, Role.OPS, Role.CUSTOMER, Role.PROVISIONING  # noqa: E741


class Capability(StrEnum):
    """A kind of action, named for what it lets a person do (not for an endpoint)."""

    READ_FLEET = "read_fleet"  # devices, telemetry, events, forecasts (within scope)
    READ_KPIS = "read_kpis"
    READ_INCIDENTS = "read_incidents"
    ACT_ON_INCIDENTS = "act_on_incidents"  # ack, assign, dispatch, resolve, reopen, close, triage
    READ_CUSTOMERS = "read_customers"  # customers, sites, unassigned devices
    MANAGE_CUSTOMERS = "manage_customers"  # create and edit customers and sites, place devices
    READ_RULES = "read_rules"
    MANAGE_RULES = "manage_rules"
    SEND_COMMANDS = "send_commands"  # issue, follow (stream), cancel, download a fetched file
    READ_COMMANDS = "read_commands"  # a command and its replies
    READ_COMMAND_OUTPUT = "read_command_output"
    READ_SESSIONS = "read_sessions"  # remote sessions and their reports
    RUN_SESSIONS = "run_sessions"  # open, run commands in, ask consent, close
    READ_GUIDES = "read_guides"
    WRITE_GUIDES = "write_guides"
    RUN_GUIDES = "run_guides"  # follow a guide on an incident (guided self-resolution)
    READ_KNOWLEDGE = "read_knowledge"  # articles and search (customers: published customer-safe)
    WRITE_KNOWLEDGE = "write_knowledge"  # write, publish, retire articles; apply a suggestion
    READ_SUGGESTIONS = "read_suggestions"  # ranked articles for an incident (staff)
    READ_AUDIT = "read_audit"
    READ_INGEST = "read_ingest"  # ingest statistics and the quarantine
    VERIFY_AUDIT = "verify_audit"
    MANAGE_USERS = "manage_users"
    MANAGE_DEVICE_ACCESS = "manage_device_access"  # revoke, quarantine, certificates


_TABLE: dict[Capability, frozenset[Role]] = {
    Capability.READ_FLEET: frozenset({A, T, O, C, P}),
    Capability.READ_KPIS: frozenset({A, T, O, C}),
    Capability.READ_INCIDENTS: frozenset({A, T, O, C}),
    Capability.ACT_ON_INCIDENTS: frozenset({A, T}),
    Capability.READ_CUSTOMERS: frozenset({A, T, O}),
    Capability.MANAGE_CUSTOMERS: frozenset({A, T}),
    Capability.READ_RULES: frozenset({A, T, O}),
    Capability.MANAGE_RULES: frozenset({A, T}),
    Capability.SEND_COMMANDS: frozenset({A, T}),
    Capability.READ_COMMANDS: frozenset({A, T, O, P}),
    Capability.READ_COMMAND_OUTPUT: frozenset({A, T, O}),
    Capability.READ_SESSIONS: frozenset({A, T, O}),
    Capability.RUN_SESSIONS: frozenset({A, T}),
    Capability.READ_GUIDES: frozenset({A, T, O}),
    Capability.WRITE_GUIDES: frozenset({A, T}),
    Capability.RUN_GUIDES: frozenset({A, T, C}),
    Capability.READ_KNOWLEDGE: frozenset({A, T, O, C}),
    Capability.WRITE_KNOWLEDGE: frozenset({A, T}),
    Capability.READ_SUGGESTIONS: frozenset({A, T, O}),
    Capability.READ_AUDIT: frozenset({A, O}),
    Capability.READ_INGEST: frozenset({A, O}),
    Capability.VERIFY_AUDIT: frozenset({A}),
    Capability.MANAGE_USERS: frozenset({A}),
    Capability.MANAGE_DEVICE_ACCESS: frozenset({A}),
}
if set(_TABLE) != set(Capability) or any(A not in roles for roles in _TABLE.values()):
    raise RuntimeError("permissions: every capability needs a row, and every row includes admin")

PERMISSIONS: Mapping[Capability, frozenset[Role]] = MappingProxyType(_TABLE)
"""Each capability with the roles that have it (admin always among them); read-only."""


def roles_for(capability: Capability) -> frozenset[Role]:
    """The roles that have ``capability``."""
    return PERMISSIONS[capability]


def allows(principal: Principal, capability: Capability) -> bool:
    """Whether ``principal``'s role has ``capability`` (for links and buttons)."""
    return principal.role in PERMISSIONS[capability]


def check(principal: Principal, capability: Capability) -> Principal:
    """``principal`` if its role has ``capability``; else :class:`Forbidden` naming the roles
    that do (the API's 403 and the console's refusal page say the same)."""
    roles = PERMISSIONS[capability]
    if principal.role not in roles:
        names = ", ".join(sorted(role.value for role in roles))
        raise Forbidden(f"role {principal.role.value!r} may not do this (needs one of: {names})")
    return principal


def capability_with(roles: Iterable[Role]) -> Capability:
    """The first capability (in table order) whose roles are exactly ``roles`` plus admin: how
    a ``require_role(...)`` written before this table finds its row. :class:`ValueError` when
    no row has that combination, so no endpoint can let through a set of roles the table does
    not name."""
    wanted = frozenset(roles) | {A}
    for capability, have in PERMISSIONS.items():
        if have == wanted:
            return capability
    names = ", ".join(sorted(role.value for role in wanted))
    raise ValueError(
        f"permissions: no capability is held by exactly {{{names}}}; add a row to "
        "server/base/permissions.py (and its routes to tests/server/test_roles_matrix.py)"
    )
