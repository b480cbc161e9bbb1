"""``fleetcare server``: Device state rebuilds, revocation in the registry, and quarantined up-messages."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.cli.common import (
    CLI_ACTOR,
    ConfigOption,
    app,
    load,
    with_session,
    with_sessions,
)


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

    settings = load(config)
    tracker = IncidentTracker(settings.incidents)

    async def work(session: AsyncSession) -> int:
        ids = device_ids or list(await session.scalars(select(Device.id).order_by(Device.id)))
        for device_id in ids:
            await fleet.get_device(session, device_id)
            await tracker.rebuild(session, device_id)
            await session.commit()
        return len(ids)

    count = with_session(settings, work)
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

    typer.echo(with_session(load(config), work))


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

    lines = with_session(load(config), work, create=False)
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

    settings = load(config)
    tracker = IncidentTracker(settings.incidents) if settings.incidents.enabled else None

    def show(result: ReplayResult) -> None:
        typer.echo(f"{result.id}\t{result.outcome}\t{result.topic}\t{result.detail}")

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[ReplayResult]:
        return await replay_quarantined(
            sessions, ids=ids or None, limit=limit, actor=CLI_ACTOR, incidents=tracker, on_result=show
        )

    results = with_sessions(settings, work)
    kept = sum(not r.resolved for r in results)
    typer.echo(f"replayed {len(results)}: {len(results) - kept} stored, {kept} still quarantined", err=True)
    if kept:
        raise typer.Exit(1)
