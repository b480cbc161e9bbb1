"""Users, roles and API tokens.

A token is ``fct_`` + ``secrets.token_urlsafe(32)``, shown once. The prefix makes a leaked token
recognisable to secret scanners and keeps it from starting with ``-`` (which a command line
would take for an option); only its SHA-256 is stored, so a leaked
database does not leak usable tokens. Tokens may expire and may be revoked.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import ApiToken, Role, User
from server.db.types import utcnow
from server.errors import Conflict, InvalidInput, NotFound, Unauthorized
from server.services import audit

__all__ = [
    "IssuedToken",
    "Principal",
    "authenticate",
    "create_user",
    "hash_token",
    "issue_token",
    "revoke_token",
    "revoke_user_tokens",
]

TOKEN_PREFIX = "fct_"  # noqa: S105 - a public prefix, not a secret
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,128}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the authenticated user behind a token."""

    user_id: int
    name: str
    role: Role
    customer_id: int | None = None  # a ``customer`` user's own customer

    @property
    def actor(self) -> str:
        return f"user:{self.name}"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str  # shown once, never stored
    token_id: int
    user: str
    expires_at: datetime | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _user(session: AsyncSession, name: str) -> User:
    user = await session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound("user", name)
    return user


async def create_user(session: AsyncSession, name: str, role: Role | str, *, actor: str) -> User:
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"user name {name!r} must be 1-128 characters of A-Z a-z 0-9 . _ @ -", field="name"
        )
    try:
        role = Role(role)
    except ValueError as exc:
        allowed = ", ".join(r.value for r in Role)
        raise InvalidInput(f"role {role!r} is not one of {allowed}", field="role") from exc
    if await session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} already exists")
    user = User(name=name, role=role.value, created_at=utcnow())
    session.add(user)
    audit.record(
        session, actor=actor, action="user.created", target=f"user:{name}", detail={"role": role.value}
    )
    await session.commit()
    return user


async def issue_token(
    session: AsyncSession, name: str, *, actor: str, ttl: timedelta | None = None
) -> IssuedToken:
    user = await _user(session, name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(
        token_hash=hash_token(token),
        user_id=user.id,
        created_at=now,
        expires_at=now + ttl if ttl is not None else None,
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="token.created",
        target=f"user:{name}",
        detail={"token_id": row.id, "expires_at": row.expires_at.isoformat() if row.expires_at else None},
    )
    await session.commit()
    return IssuedToken(token=token, token_id=row.id, user=name, expires_at=row.expires_at)


async def revoke_token(session: AsyncSession, token: str, *, actor: str) -> int:
    """Revoke one token, given as the token itself; return its id."""
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        raise NotFound("token", token[:6] + "…")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(session, actor=actor, action="token.revoked", target=f"token:{row.id}")
        await session.commit()
    return row.id


async def revoke_user_tokens(session: AsyncSession, name: str, *, actor: str) -> int:
    """Revoke every live token of a user; return how many."""
    user = await _user(session, name)
    result = await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(ApiToken.id)
    )
    ids = [row[0] for row in result]
    audit.record(
        session, actor=actor, action="token.revoked", target=f"user:{name}", detail={"token_ids": ids}
    )
    await session.commit()
    return len(ids)


async def authenticate(session: AsyncSession, token: str) -> Principal:
    """The principal behind ``token``; :class:`Unauthorized` if unknown, expired or revoked."""
    row = (
        await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == hash_token(token))
        )
    ).first()
    if row is None:
        raise Unauthorized("unknown API token")
    api_token, user = row
    if api_token.revoked_at is not None:
        raise Unauthorized("API token has been revoked")
    if api_token.expires_at is not None and api_token.expires_at <= utcnow():
        raise Unauthorized("API token has expired")
    return Principal(user_id=user.id, name=user.name, role=Role(user.role), customer_id=user.customer_id)
