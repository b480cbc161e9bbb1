"""Dependencies as ``Annotated`` aliases: ``SessionDep``, ``RuntimeDep``, ``CurrentUser``,
``require(capability)`` and ``require_role(...)``.

Roles gate endpoints here, by the one permissions table (``server.base.permissions``) the
console's pages read too; which devices a caller reaches is ``server.base.access``. Every
``/api/v1`` route must appear in tests/server/test_roles_matrix.py with the roles it allows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from server.base import permissions, users
from server.base.permissions import Capability
from server.base.users import Principal
from server.db.models import Role
from server.errors import Unauthorized
from server.runtime import Runtime

__all__ = ["CurrentUser", "RuntimeDep", "SessionDep", "require", "require_role"]

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `POST /api/v1/auth/login` or `fleetcare server create-user/token`",
)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing API token: send 'Authorization: Bearer <token>'")
    return await users.authenticate(session, credentials.credentials)


CurrentUser = Annotated[Principal, Depends(current_user)]


def require(capability: Capability) -> Any:
    """``Depends`` that lets through only the roles the permissions table gives ``capability``
    (403 naming them otherwise)."""

    async def check(user: CurrentUser) -> Principal:
        return permissions.check(user, capability)

    return Depends(check)


def require_role(*roles: Role) -> Any:
    """``Depends`` that lets only ``roles`` through (admin always passes): the table's row with
    exactly those roles, so the check is the table's. A combination the table has no row for
    fails at import (``ValueError``): add the capability to ``server.base.permissions`` first."""
    return require(permissions.capability_with(roles))
