"""Users, roles, passwords, API tokens and technician assignments.

A token is ``fct_`` + ``secrets.token_urlsafe(32)``, shown once. The prefix makes a leaked token
recognisable to secret scanners and keeps it from starting with ``-`` (which a command line
would take for an option); only its SHA-256 is stored, so a leaked
database does not leak usable tokens. Tokens may expire and may be revoked.

Passwords are hashed with Argon2id (memory-hard, so a leaked hash is expensive to brute-force);
a stored hash made with older parameters is re-hashed at the next successful sign-in. Hashing
runs in a worker thread: it takes ~0.1 s of CPU on purpose and must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.base import audit
from server.db.models import ApiToken, Customer, Role, TechnicianAssignment, User
from server.db.types import utcnow
from server.errors import Conflict, InvalidInput, NotFound, Unauthorized

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "IssuedToken",
    "Principal",
    "assign",
    "assignments",
    "authenticate",
    "create_user",
    "disable_user",
    "get_user",
    "hash_token",
    "issue_token",
    "list_users",
    "login",
    "resolve_customer",
    "revoke_token",
    "revoke_token_id",
    "revoke_user_tokens",
    "set_password",
    "unassign",
]

TOKEN_PREFIX = "fct_"  # noqa: S105 - a public prefix, not a secret
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # Argon2 accepts more; a cap keeps a request from costing seconds
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,128}")
_LOGIN_FAILED = "wrong user name or password"

_hasher = PasswordHasher()  # Argon2id, argon2-cffi's defaults (RFC 9106 low-memory profile)
# verified against when the user does not exist, so both failures take the same time
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the authenticated user behind a token."""

    user_id: int
    name: str
    role: Role
    customer_id: int | None = None  # a ``customer`` user's own customer
    token_id: int | None = None  # the token this request came with (sign-out revokes it)

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


async def get_user(session: AsyncSession, name: str) -> User:
    return await _user(session, name)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters", field="password")


async def _hash_password(password: str) -> str:
    _check_password(password)
    return await asyncio.to_thread(_hasher.hash, password)


async def resolve_customer(session: AsyncSession, ref: str | int) -> Customer:
    """A customer by name or by id, as every command and filter that names one accepts both.

    An exact name wins, then a name that differs only in case, then digits as an id. A
    reference that fits two customers (no exact name but two that differ from it only in case,
    or digits that are one customer's name and another's id) is refused listing them, rather
    than one of them chosen silently."""
    if isinstance(ref, int):
        found = await session.get(Customer, ref)
        if found is None:
            raise NotFound("customer", ref)
        return found
    as_id = int(ref) if ref.isascii() and ref.isdigit() and len(ref) < 10 else None  # an INTEGER column
    by_id = await session.get(Customer, as_id) if as_id is not None else None
    exact = await session.scalar(select(Customer).where(Customer.name == ref))
    if exact is not None:
        candidates = [exact] if by_id is None or by_id.id == exact.id else [exact, by_id]
    else:
        folded = list(
            await session.scalars(
                select(Customer).where(func.lower(Customer.name) == func.lower(ref)).order_by(Customer.id)
            )
        )
        candidates = folded or ([by_id] if by_id is not None else [])
    if not candidates:
        raise NotFound("customer", ref)
    if len(candidates) > 1:
        listed = ", ".join(f"#{c.id} {c.name!r}" for c in candidates)
        # digits that are a name and another's id: that one is meant by its name instead
        how = "give the id" if exact is None else "give the name of the one with that id, or the other's id"
        raise InvalidInput(f"customer {ref!r} is ambiguous: it could be {listed}; {how}", field="customer")
    return candidates[0]


async def create_user(
    session: AsyncSession,
    name: str,
    role: Role | str,
    *,
    actor: str,
    customer: str | int | None = None,
    password: str | None = None,
) -> User:
    """A user; a ``customer`` user needs ``customer`` (its name or id), nobody else may have one.
    Without ``password`` the user signs in only with API tokens."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"user name {name!r} must be 1-128 characters of A-Z a-z 0-9 . _ @ -", field="name"
        )
    try:
        role = Role(role)
    except ValueError as exc:
        allowed = ", ".join(r.value for r in Role)
        raise InvalidInput(f"role {role!r} is not one of {allowed}", field="role") from exc
    if role is Role.CUSTOMER and customer is None:
        raise InvalidInput("a customer user needs the customer it belongs to", field="customer")
    if role is not Role.CUSTOMER and customer is not None:
        raise InvalidInput(
            f"only customer users belong to a customer (role is {role.value!r}); "
            "assign technicians with 'fleetcare server assign'",
            field="customer",
        )
    customer_row = await resolve_customer(session, customer) if customer is not None else None
    if await session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} already exists")
    password_hash = await _hash_password(password) if password is not None else None
    user = User(
        name=name,
        role=role.value,
        created_at=utcnow(),
        customer_id=customer_row.id if customer_row else None,
        password_hash=password_hash,
    )
    session.add(user)
    detail: dict[str, object] = {"role": role.value, "password": password is not None}
    if customer_row is not None:
        detail["customer_id"] = customer_row.id
    audit.record(session, actor=actor, action="user.created", target=f"user:{name}", detail=detail)
    await session.commit()
    return user


async def list_users(
    session: AsyncSession, *, role: Role | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[User], int]:
    conditions = [User.role == role.value] if role is not None else []
    total = await session.scalar(select(func.count()).select_from(User).where(*conditions))
    rows = await session.scalars(
        select(User).where(*conditions).order_by(User.name).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def assignments(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, list[int]]:
    """Each technician's assigned customer ids, sorted."""
    ids = list(user_ids)
    out: dict[int, list[int]] = {user_id: [] for user_id in ids}
    if not ids:
        return out
    rows = await session.execute(
        select(TechnicianAssignment.user_id, TechnicianAssignment.customer_id)
        .where(TechnicianAssignment.user_id.in_(ids))
        .order_by(TechnicianAssignment.customer_id)
    )
    for user_id, customer_id in rows:
        out[user_id].append(customer_id)
    return out


async def set_password(session: AsyncSession, name: str, password: str, *, actor: str) -> User:
    """Set or replace a password. Existing tokens keep working (revoke them separately)."""
    user = await _user(session, name)
    user.password_hash = await _hash_password(password)
    audit.record(session, actor=actor, action="user.password_set", target=f"user:{name}")
    await session.commit()
    return user


async def disable_user(session: AsyncSession, name: str, *, actor: str) -> User:
    """Disable a user: no more sign-in, and every token stops working (they are also revoked)."""
    user = await _user(session, name)
    if user.disabled_at is not None:
        raise Conflict(f"user {name!r} is already disabled (since {user.disabled_at.isoformat()})")
    now = utcnow()
    user.disabled_at = now
    result = await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(ApiToken.id)
    )
    revoked = sorted(row[0] for row in result)
    audit.record(
        session, actor=actor, action="user.disabled", target=f"user:{name}", detail={"token_ids": revoked}
    )
    await session.commit()
    return user


async def _technician(session: AsyncSession, name: str) -> User:
    user = await _user(session, name)
    if user.role != Role.TECHNICIAN.value:
        raise InvalidInput(
            f"user {name!r} is a {user.role}, not a technician: only technicians are assigned to customers",
            field="name",
        )
    return user


async def assign(session: AsyncSession, technician: str, customer: str | int, *, actor: str) -> bool:
    """Let a technician work on a customer's devices; False if already assigned."""
    user = await _technician(session, technician)
    row = await resolve_customer(session, customer)
    key = {"user_id": user.id, "customer_id": row.id}
    if await session.get(TechnicianAssignment, key) is not None:
        return False
    session.add(TechnicianAssignment(**key, created_at=utcnow()))
    audit.record(
        session,
        actor=actor,
        action="user.assigned",
        target=f"user:{technician}",
        detail={"customer_id": row.id, "customer": row.name},
    )
    await session.commit()
    return True


async def unassign(session: AsyncSession, technician: str, customer: str | int, *, actor: str) -> None:
    user = await _technician(session, technician)
    row = await resolve_customer(session, customer)
    result = await session.execute(
        delete(TechnicianAssignment).where(
            TechnicianAssignment.user_id == user.id, TechnicianAssignment.customer_id == row.id
        )
    )
    if not getattr(result, "rowcount", 0):
        raise NotFound("assignment", f"{technician} → {row.name}")
    audit.record(
        session,
        actor=actor,
        action="user.unassigned",
        target=f"user:{technician}",
        detail={"customer_id": row.id, "customer": row.name},
    )
    await session.commit()


async def issue_token(
    session: AsyncSession, name: str, *, actor: str, ttl: timedelta | None = None, via: str | None = None
) -> IssuedToken:
    """A new token for ``name``; ``via`` (e.g. ``"login"``) goes into the audit detail."""
    user = await _user(session, name)
    if user.disabled_at is not None:
        raise Conflict(f"user {name!r} is disabled: no token can be issued")
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
    detail: dict[str, object] = {
        "token_id": row.id,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
    }
    if via is not None:
        detail["via"] = via
    audit.record(session, actor=actor, action="token.created", target=f"user:{name}", detail=detail)
    await session.commit()
    return IssuedToken(token=token, token_id=row.id, user=name, expires_at=row.expires_at)


async def login(
    session: AsyncSession, name: str, password: str, *, ttl: timedelta, source: str | None = None
) -> tuple[IssuedToken, User]:
    """Check a password and issue a sign-in token. Unknown user, wrong password and a user
    without a password get the same answer (and take the same time); failures are audited."""
    user = await session.scalar(select(User).where(User.name == name))
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    ok: bool
    try:
        ok = await asyncio.to_thread(_hasher.verify, stored, password[:MAX_PASSWORD_LENGTH])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None or not user.password_hash:
        audit.record(
            session,
            actor="anonymous",  # the name is unproven
            action="auth.login",
            target=f"user:{name[:128]}",
            detail={"source": source} if source else {},
            result="denied",
        )
        await session.commit()
        raise Unauthorized(_LOGIN_FAILED)
    if user.disabled_at is not None:
        audit.record(
            session, actor=f"user:{name}", action="auth.login", target=f"user:{name}", result="disabled"
        )
        await session.commit()
        raise Unauthorized(f"user {name!r} is disabled; ask an admin")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = await asyncio.to_thread(_hasher.hash, password)
    audit.record(
        session,
        actor=f"user:{name}",
        action="auth.login",
        target=f"user:{name}",
        detail={"source": source} if source else {},
    )
    issued = await issue_token(session, name, actor=f"user:{name}", ttl=ttl, via="login")
    return issued, user


async def revoke_token(session: AsyncSession, token: str, *, actor: str) -> int:
    """Revoke one token, given as the token itself; return its id."""
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        raise NotFound("token", token[:6] + "…")
    return await revoke_token_id(session, row.id, actor=actor)


async def revoke_token_id(session: AsyncSession, token_id: int, *, actor: str) -> int:
    """Revoke one token by its id (sign-out); revoking twice is not an error."""
    row = await session.get(ApiToken, token_id)
    if row is None:
        raise NotFound("token", token_id)
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
    """The principal behind ``token``; :class:`Unauthorized` if unknown, expired, revoked or its
    user is disabled."""
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
    if user.disabled_at is not None:
        raise Unauthorized(f"user {user.name!r} is disabled; ask an admin")
    return Principal(
        user_id=user.id,
        name=user.name,
        role=Role(user.role),
        customer_id=user.customer_id,
        token_id=api_token.id,
    )
