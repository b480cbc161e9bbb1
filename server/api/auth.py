"""Sign-in: ``POST /auth/login`` (password → token), ``POST /auth/logout``, ``GET /auth/me``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from server.api.deps import CurrentUser, RuntimeDep, SessionDep
from server.base import users
from server.db.models import ApiToken, User

__all__ = ["LoginBody", "LoginPublic", "MePublic", "UserPublic", "router", "user_public"]

router = APIRouter(prefix="/auth", tags=["auth"])


class UserPublic(BaseModel):
    name: str
    role: str
    customer_id: int | None  # a customer user's own customer
    assignments: list[int]  # a technician's customers
    has_password: bool
    created_at: datetime
    disabled_at: datetime | None


def user_public(user: User, assignments: list[int]) -> UserPublic:
    return UserPublic(
        name=user.name,
        role=user.role,
        customer_id=user.customer_id,
        assignments=assignments,
        has_password=user.password_hash is not None,
        created_at=user.created_at,
        disabled_at=user.disabled_at,
    )


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Annotated[str, Field(min_length=1, max_length=128)]
    password: Annotated[str, Field(min_length=1, max_length=users.MAX_PASSWORD_LENGTH)]


class LoginPublic(BaseModel):
    token: str  # send as "Authorization: Bearer <token>"; shown once
    expires_at: datetime | None
    user: UserPublic
    role: str


class MePublic(UserPublic):
    token_expires_at: datetime | None


@router.post("/login", response_model=LoginPublic)
async def login(body: LoginBody, session: SessionDep, runtime: RuntimeDep, request: Request) -> LoginPublic:
    """A sign-in token living ``auth.login_token_ttl`` seconds. A wrong user name and a wrong
    password get the same 401; a disabled user cannot sign in."""
    issued, user = await users.login(
        session,
        body.username,
        body.password,
        ttl=timedelta(seconds=runtime.settings.auth.login_token_ttl),
        source=request.client.host if request.client else None,
    )
    mine = (await users.assignments(session, [user.id]))[user.id]
    return LoginPublic(
        token=issued.token, expires_at=issued.expires_at, user=user_public(user, mine), role=user.role
    )


@router.post("/logout", status_code=204, response_class=Response)
async def logout(session: SessionDep, user: CurrentUser) -> Response:
    """Revoke the token this request came with."""
    if user.token_id is not None:
        await users.revoke_token_id(session, user.token_id, actor=user.actor)
    return Response(status_code=204)


@router.get("/me", response_model=MePublic)
async def me(session: SessionDep, user: CurrentUser) -> MePublic:
    """Who the token belongs to: role, customer, assigned customers, token expiry."""
    row = await users.get_user(session, user.name)
    token = await session.get(ApiToken, user.token_id) if user.token_id is not None else None
    mine = (await users.assignments(session, [row.id]))[row.id]
    return MePublic(
        **user_public(row, mine).model_dump(), token_expires_at=token.expires_at if token else None
    )
