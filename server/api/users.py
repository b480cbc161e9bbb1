"""Users (admin only): list, create, set a password, disable, technician assignments. Every
change is audited by the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from server.api.auth import UserPublic, user_public
from server.api.deps import SessionDep, require_role
from server.api.params import Count, Id
from server.api.schemas import Page
from server.base import users
from server.base.users import Principal
from server.db.models import Role, User

__all__ = ["PasswordBody", "UserCreate", "router"]

router = APIRouter(prefix="/users", tags=["users"])

Admin = Annotated[Principal, require_role()]
UserName = Annotated[str, Path(min_length=1, max_length=128, description="User name")]
CustomerId = Annotated[Id, Path(description="Customer id")]
Password = Annotated[str, Field(min_length=users.MIN_PASSWORD_LENGTH, max_length=users.MAX_PASSWORD_LENGTH)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]{1,128}$", max_length=128)]
    role: Role
    customer: Id | Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None, description="Customer id or name (customer role only)"
    )
    password: Password | None = Field(
        default=None, description="None: the user signs in with API tokens only"
    )


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: Password


async def _public(session: SessionDep, user: User) -> UserPublic:
    return user_public(user, (await users.assignments(session, [user.id]))[user.id])


@router.get("", response_model=Page[UserPublic])
async def list_users(
    *,
    session: SessionDep,
    _admin: Admin,
    role: Role | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Count, Query()] = 0,
) -> Page[UserPublic]:
    rows, total = await users.list_users(session, role=role, limit=limit, offset=offset)
    mine = await users.assignments(session, [row.id for row in rows])
    return Page(
        items=[user_public(row, mine[row.id]) for row in rows], total=total, limit=limit, offset=offset
    )


@router.post("", status_code=201, response_model=UserPublic)
async def create_user(body: UserCreate, session: SessionDep, admin: Admin) -> UserPublic:
    user = await users.create_user(
        session, body.name, body.role, actor=admin.actor, customer=body.customer, password=body.password
    )
    return await _public(session, user)


@router.get("/{name}", response_model=UserPublic)
async def get_user(name: UserName, session: SessionDep, _admin: Admin) -> UserPublic:
    return await _public(session, await users.get_user(session, name))


@router.put("/{name}/password", status_code=204, response_class=Response)
async def set_password(name: UserName, body: PasswordBody, session: SessionDep, admin: Admin) -> Response:
    """Set or replace the password; the user's existing tokens keep working."""
    await users.set_password(session, name, body.password, actor=admin.actor)
    return Response(status_code=204)


@router.post("/{name}/disable", response_model=UserPublic)
async def disable_user(name: UserName, session: SessionDep, admin: Admin) -> UserPublic:
    """No more sign-in; every token of the user stops working."""
    return await _public(session, await users.disable_user(session, name, actor=admin.actor))


@router.post("/{name}/assignments/{customer_id}", response_model=UserPublic)
async def assign(name: UserName, customer_id: CustomerId, session: SessionDep, admin: Admin) -> UserPublic:
    """Let a technician work on this customer's devices (no-op if already assigned)."""
    await users.assign(session, name, customer_id, actor=admin.actor)
    return await _public(session, await users.get_user(session, name))


@router.delete("/{name}/assignments/{customer_id}", response_model=UserPublic)
async def unassign(name: UserName, customer_id: CustomerId, session: SessionDep, admin: Admin) -> UserPublic:
    await users.unassign(session, name, customer_id, actor=admin.actor)
    return await _public(session, await users.get_user(session, name))
