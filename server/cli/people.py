"""``fleetcare server``: Users, passwords, API tokens and technicians' customers."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from server.cli.common import (
    CLI_ACTOR,
    ConfigOption,
    ExpiresOption,
    app,
    fail,
    load,
    with_session,
)
from server.db.models import Role
from server.settings import ServerSettings


def _ttl(days: float | None, settings: ServerSettings) -> timedelta | None:
    """--expires-days, else ``auth.api_token_ttl_days``, else no expiry."""
    days = days if days is not None else settings.auth.api_token_ttl_days
    return timedelta(days=days) if days else None


def _read_password(from_stdin: bool) -> str:
    """One line from stdin (scripts), or a hidden prompt typed twice."""
    import sys  # noqa: PLC0415

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise fail("--password-stdin: stdin gave no password")
        return password
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


@app.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="User name (A-Z a-z 0-9 . _ @ -).")],
    *,
    role: Annotated[
        Role, typer.Option("--role", help="admin, technician, ops, customer or provisioning.")
    ] = Role.TECHNICIAN,
    customer: Annotated[
        str | None, typer.Option("--customer", help="The customer (name or id) a customer user belongs to.")
    ] = None,
    password_stdin: PasswordStdinOption = False,
    expires_days: ExpiresOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a user and print a first API token (shown once) to stdout. With --password-stdin
    the user can also sign in with a password (POST /api/v1/auth/login)."""
    from server.base import users  # noqa: PLC0415

    if role is Role.CUSTOMER and customer is None:
        raise fail("a customer user needs --customer NAME")
    password = _read_password(True) if password_stdin else None
    settings = load(config)

    async def work(session: AsyncSession) -> str:
        await users.create_user(session, name, role, actor=CLI_ACTOR, customer=customer, password=password)
        issued = await users.issue_token(session, name, actor=CLI_ACTOR, ttl=_ttl(expires_days, settings))
        return issued.token

    token = with_session(settings, work)
    typer.echo(f"created user {name!r} ({role.value}); API token (shown once):", err=True)
    typer.echo(token)


@app.command()
def token(
    name: Annotated[str, typer.Argument(help="User name.")],
    expires_days: ExpiresOption = None,
    config: ConfigOption = None,
) -> None:
    """Issue a new API token for an existing user and print it (shown once) to stdout."""
    from server.base import users  # noqa: PLC0415

    settings = load(config)

    async def work(session: AsyncSession) -> str:
        return (
            await users.issue_token(session, name, actor=CLI_ACTOR, ttl=_ttl(expires_days, settings))
        ).token

    typer.echo(with_session(settings, work))


@app.command("set-password")
def set_password(
    name: Annotated[str, typer.Argument(help="User name.")],
    password_stdin: PasswordStdinOption = False,
    config: ConfigOption = None,
) -> None:
    """Set or replace a user's password (prompted, hidden, unless --password-stdin)."""
    from server.base import users  # noqa: PLC0415

    password = _read_password(password_stdin)

    async def work(session: AsyncSession) -> None:
        await users.set_password(session, name, password, actor=CLI_ACTOR)

    with_session(load(config), work)
    typer.echo(f"password of {name!r} set", err=True)


@app.command("disable-user")
def disable_user(
    name: Annotated[str, typer.Argument(help="User name.")], config: ConfigOption = None
) -> None:
    """Disable a user: no more sign-in, and every token of theirs stops working."""
    from server.base import users  # noqa: PLC0415

    async def work(session: AsyncSession) -> None:
        await users.disable_user(session, name, actor=CLI_ACTOR)

    with_session(load(config), work)
    typer.echo(f"user {name!r} disabled", err=True)


TechnicianArg = Annotated[str, typer.Argument(help="Technician user name.")]
CustomerArg = Annotated[str, typer.Argument(help="Customer name or id.")]


@app.command()
def assign(technician: TechnicianArg, customer: CustomerArg, config: ConfigOption = None) -> None:
    """Let a technician work on a customer's devices."""
    from server.base import users  # noqa: PLC0415

    async def work(session: AsyncSession) -> bool:
        return await users.assign(session, technician, customer, actor=CLI_ACTOR)

    added = with_session(load(config), work)
    typer.echo(
        f"{technician!r} {'assigned to' if added else 'was already assigned to'} {customer!r}", err=True
    )


@app.command()
def unassign(technician: TechnicianArg, customer: CustomerArg, config: ConfigOption = None) -> None:
    """Take a customer away from a technician."""
    from server.base import users  # noqa: PLC0415

    async def work(session: AsyncSession) -> None:
        await users.unassign(session, technician, customer, actor=CLI_ACTOR)

    with_session(load(config), work)
    typer.echo(f"{technician!r} no longer assigned to {customer!r}", err=True)


@app.command("revoke-token")
def revoke_token(
    token: Annotated[str | None, typer.Argument(help="The token to revoke.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Revoke every token of this user.")] = None,
    config: ConfigOption = None,
) -> None:
    """Revoke one token, or every token of a user (--user)."""
    from server.base import users  # noqa: PLC0415

    if (token is None) == (user is None):
        raise fail("give either a TOKEN or --user NAME")

    async def work(session: AsyncSession) -> str:
        if user is not None:
            count = await users.revoke_user_tokens(session, user, actor=CLI_ACTOR)
            return f"revoked {count} token(s) of {user!r}"
        assert token is not None
        token_id = await users.revoke_token(session, token, actor=CLI_ACTOR)
        return f"revoked token {token_id}"

    typer.echo(with_session(load(config), work), err=True)
