"""Resolving incidents from evidence: people's commands to the device during an incident (the
``command`` entries, ``t_ack``, ``t_respond``, ``remote_used``) and, once the device is restored,
the resolution channel the evidence supports (docs/incidents.md): ``remote`` (a person's command
succeeded), ``customer`` (the customer was working through a guide, or finished one as fixed,
and no technician's command intervened), ``auto``. Control commands (a consent request, a
cancel) are not remediation. Joins the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

import protocol
from server.base.timeline import REMEDIATION, SERVER, note
from server.db.models import (
    Channel,
    Command,
    CommandState,
    Guide,
    GuideRun,
    Incident,
    IncidentEntry,
    IncidentStatus,
    User,
)

__all__ = ["ACTIVE", "refresh"]

EPS = 1e-3
ACTIVE = (IncidentStatus.OPEN.value, IncidentStatus.ACKNOWLEDGED.value)


async def refresh(session: AsyncSession, incidents: Sequence[Incident], now: float) -> None:
    """Record people's commands to the device during each open incident (t_ack, t_respond,
    remote_used, a ``command`` entry), then resolve restored incidents the evidence explains:
    ``remote`` when a person's command during the last episode succeeded, ``auto`` when nobody
    did anything; otherwise a person resolves it. Waits while such a command is unfinished."""
    active = [incident for incident in incidents if incident.status in ACTIVE]
    if not active:
        return
    ids = [incident.id for incident in active]
    devices = sorted({incident.device_id for incident in active})
    since = min(incident.t_fault for incident in active)
    commands = (
        await session.execute(
            select(
                Command.id,
                Command.device_id,
                Command.action,
                Command.issuer,
                Command.state,
                Command.issued_at,
                Command.finished_at,
            )
            .join(User, User.name == Command.issuer)
            .where(
                Command.device_id.in_(devices),
                Command.issued_at >= since,
                Command.action.not_in(sorted(protocol.CONTROL_ACTIONS)),
            )
            .order_by(Command.issued_at)
        )
    ).all()
    entries = (
        await session.execute(
            select(
                IncidentEntry.incident_id, IncidentEntry.kind, IncidentEntry.ts, IncidentEntry.detail
            ).where(IncidentEntry.incident_id.in_(ids), IncidentEntry.kind.in_(sorted(REMEDIATION)))
        )
    ).all()
    noted = {
        (iid, (detail or {}).get("command_id")) for iid, kind, _ts, detail in entries if kind == "command"
    }
    runs: dict[int, list[GuideRun]] = {}
    for run in await session.scalars(
        select(GuideRun).where(GuideRun.incident_id.in_(ids), GuideRun.state.in_(["active", "fixed"]))
    ):
        runs.setdefault(run.incident_id, []).append(run)
    acted: dict[int, list[float]] = {}
    for iid, _kind, ts, _detail in entries:
        acted.setdefault(iid, []).append(ts.timestamp())
    for incident in active:
        mine = [c for c in commands if c.device_id == incident.device_id and c.issued_at >= incident.t_fault]
        for command in mine:
            if (incident.id, command.id) in noted:
                continue
            note(
                session,
                incident,
                "command",
                actor=f"user:{command.issuer}",
                ts=command.issued_at,
                command_id=command.id,
                action=command.action,
            )
            acted.setdefault(incident.id, []).append(command.issued_at.timestamp())
            incident.remote_used = True
            if incident.t_respond is None or command.issued_at < incident.t_respond:
                incident.t_respond = command.issued_at
            if incident.t_ack is None or command.issued_at < incident.t_ack:
                incident.t_ack = command.issued_at
            if incident.status == IncidentStatus.OPEN.value:
                incident.status = IncidentStatus.ACKNOWLEDGED.value
        await _auto_resolve(session, incident, mine, acted.get(incident.id, []), runs.get(incident.id, []))


async def _auto_resolve(
    session: AsyncSession,
    incident: Incident,
    commands: Sequence[Any],
    acted: list[float],
    runs: Sequence[GuideRun] = (),
) -> None:
    if not incident.auto_resolve or incident.t_restored is None or not incident.episodes:
        return
    last = incident.episodes[-1]
    start = last["start_s"]
    end_received = last.get("end_received_s") or last["end_s"]
    detect = last.get("detect_s") or incident.detect_s
    during = [c for c in commands if start - EPS <= c.issued_at.timestamp() <= end_received + EPS]
    if any(not CommandState(c.state).terminal for c in during):
        return  # a person's command is still running: its outcome decides the channel
    succeeded = [c for c in during if c.state == CommandState.SUCCEEDED.value]
    guided = [r for r in runs if r.started_at.timestamp() <= end_received + EPS or r.state == "fixed"]
    if succeeded:
        channel = Channel.REMOTE
        finished = max(c.finished_at.timestamp() for c in succeeded if c.finished_at is not None)
        at = max(end_received, detect, finished)
    elif guided and not during:
        channel = Channel.CUSTOMER
        at = max(end_received, detect)
        await _credit_guides(session, guided, datetime.fromtimestamp(at, UTC))
    elif not any(start - EPS <= ts <= end_received + EPS for ts in acted):
        channel = Channel.AUTO
        at = max(end_received, detect)
    else:
        return  # people acted, no command explains the recovery: a person sets the channel
    incident.status = IncidentStatus.RESOLVED.value
    incident.t_resolved = datetime.fromtimestamp(at, UTC)
    incident.channel = channel.value
    incident.resolved_by = SERVER
    note(
        session,
        incident,
        "resolved",
        ts=incident.t_resolved,
        channel=channel.value,
        evidence=[c.id for c in succeeded],
        guide_runs=[r.id for r in guided] if channel is Channel.CUSTOMER else [],
        t_restored=datetime.fromtimestamp(last["end_s"], UTC).isoformat(),
    )


async def _credit_guides(session: AsyncSession, runs: Sequence[GuideRun], at: datetime) -> None:
    """The guides that fixed it: a run still active ends ``fixed`` and counts as a success (a run
    the customer finished as fixed was counted then)."""
    for run in runs:
        if run.state != "active":
            continue
        run.state = "fixed"
        run.finished_at = at
        await session.execute(
            update(Guide).where(Guide.id == run.guide_id).values(success_count=Guide.success_count + 1)
        )
