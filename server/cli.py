"""``fleetcare server``: run the fleet server and administer users and tokens."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Role
from server.errors import ServerError
from server.settings import ServerSettings, load_settings

__all__ = ["app"]

T = TypeVar("T")
CLI_ACTOR = "cli"

app = typer.Typer(
    help="Run and administer the fleet server.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file (environment FLEETCARE_* overrides it)."),
]
ExpiresOption = Annotated[
    float | None, typer.Option("--expires-days", min=0.0, help="Token lifetime in days (default: no expiry).")
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _settings(config: Path | None) -> ServerSettings:
    try:
        return load_settings(config)
    except ServerError as exc:
        raise _fail(str(exc)) from exc


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _with_session(settings: ServerSettings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Migrate, open a session, run ``work``; errors become one line and exit status 2."""

    async def in_session(sessions: async_sessionmaker[AsyncSession]) -> T:
        async with sessions() as session:
            return await work(session)

    return _with_sessions(settings, in_session)


def _with_sessions(
    settings: ServerSettings, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]
) -> T:
    """Migrate, hand ``work`` a session factory (for work done in many transactions); errors
    become one line and exit status 2."""
    from server.db import create_engine, create_sessionmaker, run_migrations  # noqa: PLC0415 - lazy

    async def main() -> T:
        await asyncio.to_thread(run_migrations, settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            return await work(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ServerError as exc:
        raise _fail(str(exc)) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise _fail(f"database: {exc}") from exc


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the server: API, ingest and command sweeper, until SIGINT/SIGTERM."""
    import uvicorn  # noqa: PLC0415 - only this command needs it

    from server.app import create_app, load_signer  # noqa: PLC0415
    from server.db import run_migrations  # noqa: PLC0415

    settings = _settings(config)
    _setup_logging(settings.log_level)
    try:
        load_signer(settings.signing_key_file)  # refuse a bad key before anything starts
        run_migrations(settings.database_url)
    except ServerError as exc:
        raise _fail(str(exc)) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise _fail(f"database: {exc}") from exc
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, migrate=False),
            host=settings.api.host,
            port=settings.api.port,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    server.run()
    if not server.started:
        raise typer.Exit(1)


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Apply the database migrations (the server also does this at start-up)."""
    from server.db import run_migrations  # noqa: PLC0415

    settings = _settings(config)
    _setup_logging(settings.log_level)
    try:
        run_migrations(settings.database_url)
    except (SQLAlchemyError, OSError) as exc:
        raise _fail(f"database: {exc}") from exc
    typer.echo("database is up to date", err=True)


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
            raise _fail("--password-stdin: stdin gave no password")
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
        raise _fail("a customer user needs --customer NAME")
    password = _read_password(True) if password_stdin else None
    settings = _settings(config)

    async def work(session: AsyncSession) -> str:
        await users.create_user(session, name, role, actor=CLI_ACTOR, customer=customer, password=password)
        issued = await users.issue_token(session, name, actor=CLI_ACTOR, ttl=_ttl(expires_days, settings))
        return issued.token

    token = _with_session(settings, work)
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

    settings = _settings(config)

    async def work(session: AsyncSession) -> str:
        return (
            await users.issue_token(session, name, actor=CLI_ACTOR, ttl=_ttl(expires_days, settings))
        ).token

    typer.echo(_with_session(settings, work))


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

    _with_session(_settings(config), work)
    typer.echo(f"password of {name!r} set", err=True)


@app.command("disable-user")
def disable_user(
    name: Annotated[str, typer.Argument(help="User name.")], config: ConfigOption = None
) -> None:
    """Disable a user: no more sign-in, and every token of theirs stops working."""
    from server.base import users  # noqa: PLC0415

    async def work(session: AsyncSession) -> None:
        await users.disable_user(session, name, actor=CLI_ACTOR)

    _with_session(_settings(config), work)
    typer.echo(f"user {name!r} disabled", err=True)


TechnicianArg = Annotated[str, typer.Argument(help="Technician user name.")]
CustomerArg = Annotated[str, typer.Argument(help="Customer name or id.")]


@app.command()
def assign(technician: TechnicianArg, customer: CustomerArg, config: ConfigOption = None) -> None:
    """Let a technician work on a customer's devices."""
    from server.base import users  # noqa: PLC0415

    async def work(session: AsyncSession) -> bool:
        return await users.assign(session, technician, customer, actor=CLI_ACTOR)

    added = _with_session(_settings(config), work)
    typer.echo(
        f"{technician!r} {'assigned to' if added else 'was already assigned to'} {customer!r}", err=True
    )


@app.command()
def unassign(technician: TechnicianArg, customer: CustomerArg, config: ConfigOption = None) -> None:
    """Take a customer away from a technician."""
    from server.base import users  # noqa: PLC0415

    async def work(session: AsyncSession) -> None:
        await users.unassign(session, technician, customer, actor=CLI_ACTOR)

    _with_session(_settings(config), work)
    typer.echo(f"{technician!r} no longer assigned to {customer!r}", err=True)


audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    config: ConfigOption = None,
    anchors: Annotated[
        Path | None,
        typer.Option(
            "--anchors",
            help="Anchors file, or a server log holding fleetcare-audit-anchor lines "
            "(default: auth.audit_anchor_file, beside a SQLite database when unset).",
        ),
    ] = None,
    public_keys: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="Anchor public key (PEM, e.g. pki/signing.pub); repeat for older keys "
            "(default: the public half of the anchor key in the settings).",
        ),
    ] = None,
) -> None:
    """Seal pending entries, check the whole chain and compare it with the signed anchors of its
    head: exit 0 if intact, 1 naming the first bad entry, the anchor the chain no longer holds
    (truncated, rewritten) or a forged anchor."""
    import protocol  # noqa: PLC0415
    from server.anchors import anchor as audit_anchor  # noqa: PLC0415

    settings = _settings(config)
    source = anchors or audit_anchor.anchor_file(settings)
    try:
        if public_keys:
            keys = audit_anchor.load_public_keys(public_keys)
        else:
            key = audit_anchor.load_anchor_key(settings)
            keys = {protocol.key_id(key.public_key()): key.public_key()} if key is not None else {}
    except OSError as exc:
        raise _fail(f"--public-key: cannot read {exc.filename}: {exc.strerror}") from exc
    except (protocol.InvalidKey, ServerError) as exc:
        raise _fail(str(exc)) from exc

    async def work(session: AsyncSession) -> audit_anchor.AuditCheck:
        return await audit_anchor.verify_anchored(session, anchors=source, keys=keys)

    check = _with_session(settings, work)
    summary, *rest = check.lines()
    typer.echo(summary, err=not check.ok)
    for line in rest:
        typer.echo(line, err=True)
    if not check.ok:
        raise typer.Exit(1)


@app.command("revoke-token")
def revoke_token(
    token: Annotated[str | None, typer.Argument(help="The token to revoke.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Revoke every token of this user.")] = None,
    config: ConfigOption = None,
) -> None:
    """Revoke one token, or every token of a user (--user)."""
    from server.base import users  # noqa: PLC0415

    if (token is None) == (user is None):
        raise _fail("give either a TOKEN or --user NAME")

    async def work(session: AsyncSession) -> str:
        if user is not None:
            count = await users.revoke_user_tokens(session, user, actor=CLI_ACTOR)
            return f"revoked {count} token(s) of {user!r}"
        assert token is not None
        token_id = await users.revoke_token(session, token, actor=CLI_ACTOR)
        return f"revoked token {token_id}"

    typer.echo(_with_session(_settings(config), work), err=True)


# --- customers, sites, device assignment, state rebuilds (docs/incidents.md) --------------------

customer_app = typer.Typer(
    help="Customers: criticality, contract hours, cost per dispatch.", no_args_is_help=True
)
site_app = typer.Typer(help="A customer's sites.", no_args_is_help=True)
app.add_typer(customer_app, name="customer")
app.add_typer(site_app, name="site")

CriticalityOption = Annotated[
    int | None, typer.Option("--criticality", min=1, max=5, help="1 low ... 5 life-critical.")
]
HoursOption = Annotated[
    str | None,
    typer.Option(
        "--contract-hours",
        help='JSON, e.g. \'{"days": [0,1,2,3,4], "start": "08:00", "end": "18:00", "tz": "Europe/Berlin"}\'; "24x7" clears.',
    ),
]


def _contract_hours(raw: str) -> dict[str, Any] | None:
    import json  # noqa: PLC0415

    import pydantic  # noqa: PLC0415

    from server.api.service_schemas import ContractHours  # noqa: PLC0415

    if raw.strip().lower() == "24x7":
        return None
    try:
        return ContractHours.model_validate(json.loads(raw)).model_dump()
    except (ValueError, pydantic.ValidationError) as exc:
        raise _fail(f"--contract-hours: {exc}") from exc


def _customer_line(customer: Any) -> str:
    hours = "24x7" if customer.contract_hours is None else customer.contract_hours
    return (
        f"{customer.id}\t{customer.name}\tcriticality={customer.criticality}\t"
        f"cost_per_dispatch={customer.cost_per_dispatch:g}\tcontract_hours={hours}"
    )


@customer_app.command("create")
def customer_create(
    name: Annotated[str, typer.Argument(help="Customer name (unique).")],
    criticality: CriticalityOption = 3,
    contract_hours: HoursOption = None,
    cost_per_dispatch: Annotated[float, typer.Option("--cost-per-dispatch", min=0.0)] = 0.0,
    config: ConfigOption = None,
) -> None:
    """Create a customer; prints its id and fields."""
    from server import customers  # noqa: PLC0415

    hours = _contract_hours(contract_hours) if contract_hours else None

    async def work(session: AsyncSession) -> str:
        customer = await customers.create_customer(
            session,
            name=name,
            criticality=criticality or 3,
            contract_hours=hours,
            cost_per_dispatch=cost_per_dispatch,
            actor=CLI_ACTOR,
        )
        return _customer_line(customer)

    typer.echo(_with_session(_settings(config), work))


@customer_app.command("list")
def customer_list(config: ConfigOption = None) -> None:
    """Every customer, one per line."""
    from server import customers  # noqa: PLC0415

    async def work(session: AsyncSession) -> list[str]:
        rows, _ = await customers.list_customers(session, limit=1_000_000)
        return [_customer_line(row) for row in rows]

    for line in _with_session(_settings(config), work):
        typer.echo(line)


@customer_app.command("update")
def customer_update(
    customer_id: Annotated[int, typer.Argument(help="Customer id.")],
    *,
    name: Annotated[str | None, typer.Option("--name")] = None,
    criticality: CriticalityOption = None,
    contract_hours: HoursOption = None,
    cost_per_dispatch: Annotated[float | None, typer.Option("--cost-per-dispatch", min=0.0)] = None,
    config: ConfigOption = None,
) -> None:
    """Change the fields given."""
    from server import customers  # noqa: PLC0415

    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if criticality is not None:
        changes["criticality"] = criticality
    if contract_hours is not None:
        changes["contract_hours"] = _contract_hours(contract_hours)
    if cost_per_dispatch is not None:
        changes["cost_per_dispatch"] = cost_per_dispatch
    if not changes:
        raise _fail("nothing to change (give --name, --criticality, --contract-hours or --cost-per-dispatch)")

    async def work(session: AsyncSession) -> str:
        return _customer_line(await customers.update_customer(session, customer_id, changes, actor=CLI_ACTOR))

    typer.echo(_with_session(_settings(config), work))


@site_app.command("create")
def site_create(
    customer_id: Annotated[int, typer.Argument(help="Customer id.")],
    name: Annotated[str, typer.Argument(help="Site name (unique per customer).")],
    criticality: CriticalityOption = None,
    attended: Annotated[
        bool, typer.Option("--attended", help="Every remote session needs a local operator's consent.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a site; devices that reported this site name are assigned to it."""
    from server import customers  # noqa: PLC0415

    async def work(session: AsyncSession) -> str:
        site = await customers.create_site(
            session, customer_id, name=name, criticality=criticality, attended=attended, actor=CLI_ACTOR
        )
        mode = "\tattended" if site.attended else ""
        return f"{site.id}\t{site.name}\tcustomer={site.customer_id}\tcriticality={site.criticality}{mode}"

    typer.echo(_with_session(_settings(config), work))


@site_app.command("list")
def site_list(
    customer_id: Annotated[int, typer.Argument(help="Customer id.")], config: ConfigOption = None
) -> None:
    """A customer's sites, one per line."""
    from server import customers  # noqa: PLC0415

    async def work(session: AsyncSession) -> list[str]:
        rows, _ = await customers.list_sites(session, customer_id, limit=1_000_000)
        return [f"{s.id}\t{s.name}\tcustomer={s.customer_id}\tcriticality={s.criticality}" for s in rows]

    for line in _with_session(_settings(config), work):
        typer.echo(line)


@app.command("assign-device")
def assign_device(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    *,
    customer: Annotated[int | None, typer.Option("--customer", help="Customer id (0 clears).")] = None,
    site: Annotated[
        int | None, typer.Option("--site", help="Site id; its customer follows (0 clears).")
    ] = None,
    criticality: Annotated[
        int | None, typer.Option("--criticality", min=0, max=5, help="1-5; 0 inherits the site's/customer's.")
    ] = None,
    decommissioned: Annotated[
        str | None, typer.Option("--decommissioned", help='ISO 8601 time, or "none" to clear.')
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Set a device's customer, site, criticality or decommissioning time."""
    from datetime import datetime  # noqa: PLC0415

    from server import customers  # noqa: PLC0415

    given: dict[str, Any] = {}
    if customer is not None:
        given["customer_id"] = customer or None
    if site is not None:
        given["site_id"] = site or None
    if criticality is not None:
        given["criticality"] = criticality or None
    if decommissioned is not None:
        if decommissioned.lower() == "none":
            given["decommissioned_at"] = None
        else:
            try:
                when = datetime.fromisoformat(decommissioned.replace("Z", "+00:00"))
            except ValueError as exc:
                raise _fail(f"--decommissioned: {exc}") from exc
            if when.tzinfo is None:
                raise _fail("--decommissioned: give a time zone (e.g. 2026-12-31T00:00:00Z)")
            given["decommissioned_at"] = when
    if not given:
        raise _fail("nothing to change (give --customer, --site, --criticality or --decommissioned)")

    async def work(session: AsyncSession) -> str:
        device = await customers.assign_device(
            session, device_id, customers.DeviceAssignment(**given), actor=CLI_ACTOR
        )
        return (
            f"{device.id}\tcustomer={device.customer_id}\tsite={device.site_id}\t"
            f"criticality={device.criticality}\tdecommissioned_at={device.decommissioned_at}"
        )

    typer.echo(_with_session(_settings(config), work))


@app.command("rebuild-states")
def rebuild_states(
    device_ids: Annotated[list[str] | None, typer.Argument(help="Devices (default: every device).")] = None,
    config: ConfigOption = None,
) -> None:
    """Recompute state intervals, transient faults and incident times from the event history."""
    from sqlalchemy import select  # noqa: PLC0415

    from server import fleet  # noqa: PLC0415
    from server.db.models import Device  # noqa: PLC0415
    from server.incidents import IncidentTracker  # noqa: PLC0415

    settings = _settings(config)
    tracker = IncidentTracker(settings.incidents)

    async def work(session: AsyncSession) -> int:
        ids = device_ids or list(await session.scalars(select(Device.id).order_by(Device.id)))
        for device_id in ids:
            await fleet.get_device(session, device_id)
            await tracker.rebuild(session, device_id)
            await session.commit()
        return len(ids)

    count = _with_session(settings, work)
    typer.echo(f"rebuilt {count} device(s)", err=True)


@app.command("revoke-device")
def revoke_device(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the audit log.")] = None,
    config: ConfigOption = None,
) -> None:
    """Mark a device revoked in the registry: ingest refuses its messages within about a second,
    and a server that manages the broker's ACL (mqtt.broker_acl_file) denies it there. Its
    certificates are revoked where the CA lives: `fleetcare certs revoke`."""
    from server.broker_access import revoke_device as revoke  # noqa: PLC0415

    async def work(session: AsyncSession) -> str:
        device = await revoke(session, device_id, actor=CLI_ACTOR, reason=reason)
        return f"{device.id}\trevoked_at={device.revoked_at}"

    typer.echo(_with_session(_settings(config), work))


# --- quarantined up-messages (docs/server.md, "Quarantine") -------------------------------------

quarantine_app = typer.Typer(
    help="Up-messages set aside because handling them raised something unexpected.", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 100,
    config: ConfigOption = None,
) -> None:
    """The oldest quarantined messages: id, received, topic, seq, error, reason."""
    from sqlalchemy import select  # noqa: PLC0415

    from server.db.models import QuarantinedMessage  # noqa: PLC0415

    async def work(session: AsyncSession) -> list[str]:
        rows = await session.scalars(select(QuarantinedMessage).order_by(QuarantinedMessage.id).limit(limit))
        return [
            f"{r.id}\t{r.received_at:%Y-%m-%dT%H:%M:%SZ}\t{r.topic}\tseq={r.seq}\t{r.error}\t{r.reason[:200]}"
            for r in rows
        ]

    lines = _with_session(_settings(config), work)
    for line in lines:
        typer.echo(line)
    typer.echo(f"{len(lines)} quarantined message(s) shown", err=True)


@quarantine_app.command("replay")
def quarantine_replay(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Quarantine ids (default: all, oldest first).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1_000_000)] = 10_000,
    config: ConfigOption = None,
) -> None:
    """Run quarantined messages through ingest again (after the fix is deployed): stored ones
    leave the quarantine (audited), still failing ones stay with the new reason. Safe to repeat.
    Exit 0 when every replayed message was stored, 1 when some stay quarantined."""
    from server.incidents import IncidentTracker  # noqa: PLC0415
    from server.ingest.quarantine_replay import ReplayResult, replay_quarantined  # noqa: PLC0415

    settings = _settings(config)
    tracker = IncidentTracker(settings.incidents) if settings.incidents.enabled else None

    def show(result: ReplayResult) -> None:
        typer.echo(f"{result.id}\t{result.outcome}\t{result.topic}\t{result.detail}")

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[ReplayResult]:
        return await replay_quarantined(
            sessions, ids=ids or None, limit=limit, actor=CLI_ACTOR, incidents=tracker, on_result=show
        )

    results = _with_sessions(settings, work)
    kept = sum(not r.resolved for r in results)
    typer.echo(f"replayed {len(results)}: {len(results) - kept} stored, {kept} still quarantined", err=True)
    if kept:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
