"""Remote sessions: ``requested → awaiting_consent → active → closed | expired | denied``.

- A session starts ``requested``; it is also the queue while another session on the device is
  active or awaiting consent (at most ``sessions.max_queue`` wait; more is a 409 naming the holder).
- Starting it (at once, or by the sweeper when the holder ends): on an attended device (site or
  agent) the signed ``session.consent`` command goes out (all_commands=true) and the session
  waits in ``awaiting_consent``; otherwise it is ``active`` at once. The time limit runs from
  activation.
- The local operator's answer arrives as an event through the ingest writer
  (:func:`apply_consent_event`, in the batch's transaction): granted → active (or, on an active
  session, a recorded consent for ``needs_consent`` actions), denied → ``denied``, final.
- The sweeper expires active sessions past their time limit and requests unanswered past
  ``sessions.consent_wait``, then starts the next queued session.

Every transition writes a :class:`SessionEntry`, an audit row (same transaction) and, for a
session opened for an incident, an incident timeline entry. The report is frozen when the
session ends.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

import protocol
from server.base import access, audit
from server.base.users import Principal
from server.commands import policy
from server.commands.service import CommandService
from server.db.models import Command, Device, Incident, RemoteSession, Role, SessionEntry, SessionState, User
from server.db.types import utcnow
from server.errors import Conflict, Forbidden, InvalidInput, NotFound, ServerError
from server.incidents import service as incident_service
from server.sessions.report import build_report, incident_summary
from server.settings import SessionSettings

__all__ = [
    "HOLDING",
    "SessionFilter",
    "SessionService",
    "apply_consent_event",
    "list_sessions",
    "transition",
]

logger = logging.getLogger(__name__)

St = SessionState
HOLDING = (St.ACTIVE.value, St.AWAITING_CONSENT.value)
"""States that hold the device: only one session at a time."""
CONSENT_EVENTS = frozenset({"consent.requested", "consent.granted", "consent.denied"})


@dataclass(frozen=True, slots=True)
class SessionFilter:
    device_id: str | None = None
    state: str | None = None
    owner: str | None = None
    incident_id: int | None = None


def _new_id() -> str:
    return "ses_" + secrets.token_urlsafe(12)


def transition(
    session: AsyncSession,
    remote: RemoteSession,
    kind: str,
    *,
    actor: str,
    at: datetime,
    state: SessionState | None = None,
    **detail: Any,
) -> SessionEntry:
    """Record one step: the new state (if any), a timeline entry and an audit row."""
    if state is not None:
        detail = {"from": remote.state, "to": state.value, **detail}
        remote.state = state.value
    entry = SessionEntry(session_id=remote.id, ts=at, kind=kind, actor=actor, detail=detail)
    session.add(entry)
    audit.record(
        session,
        actor=actor,
        action=f"session.{kind}",
        target=f"device:{remote.device_id}",
        detail={"session_id": remote.id, **detail},
        ts=at,
    )
    return entry


async def _note_incident(
    session: AsyncSession,
    remote: RemoteSession,
    kind: str,
    *,
    actor: str,
    at: datetime,
    respond: bool = False,
    **detail: Any,
) -> None:
    if remote.incident_id is not None:
        await incident_service.note_session(
            session, remote.incident_id, actor, kind, at=at, respond=respond, session_id=remote.id, **detail
        )


def _activate(remote: RemoteSession, at: datetime) -> None:
    remote.activated_at = at
    remote.expires_at = at + timedelta(seconds=remote.time_limit_s)


async def _end(
    session: AsyncSession,
    remote: RemoteSession,
    state: SessionState,
    kind: str,
    *,
    actor: str,
    at: datetime,
    **detail: Any,
) -> None:
    remote.ended_at = at
    remote.ended_by = actor
    transition(session, remote, kind, actor=actor, at=at, state=state, **detail)
    await _note_incident(session, remote, kind, actor=actor, at=at, state=state.value, **detail)
    await session.flush()
    remote.report = await build_report(session, remote)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def apply_consent_event(
    session: AsyncSession, device_id: str, event: protocol.Event, received_at: datetime
) -> str | None:
    """The local operator's answer (``consent.requested|granted|denied``) moves the session, in
    the ingest batch's transaction. Returns the session id if it changed anything."""
    session_id = str(event.data.get("session_id") or "")
    remote = await session.scalar(
        select(RemoteSession)
        .where(RemoteSession.id == session_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if remote is None or remote.device_id != device_id:
        logger.warning("%s from %s for unknown session %r ignored", event.event, device_id, session_id)
        return None
    actor = f"device:{device_id}"
    state = St(remote.state)
    if event.event == "consent.requested":
        if state.terminal:
            return None
        transition(session, remote, "consent.pending", actor=actor, at=received_at)
        return remote.id
    if state.terminal:
        transition(session, remote, "consent.ignored", actor=actor, at=received_at, event=event.event)
        return remote.id
    if event.event == "consent.granted":
        by = str(event.data.get("approved_by") or "local operator")
        expires = _parse_time(event.data.get("expires_at"))
        remote.consent_by = by
        remote.consent_expires_at = expires
        detail: dict[str, Any] = {"approved_by": by, "expires_at": expires.isoformat() if expires else None}
        if state is St.AWAITING_CONSENT:
            _activate(remote, received_at)
            transition(
                session, remote, "consent.granted", actor=actor, at=received_at, state=St.ACTIVE, **detail
            )
            await _note_incident(session, remote, "activated", actor=actor, at=received_at, **detail)
        else:
            transition(session, remote, "consent.granted", actor=actor, at=received_at, **detail)
        return remote.id
    # consent.denied: final for this session
    by = str(event.data.get("denied_by") or "local operator")
    reason = str(event.data.get("reason") or "")
    await _end(
        session, remote, St.DENIED, "consent.denied", actor=actor, at=received_at, denied_by=by, reason=reason
    )
    return remote.id


async def list_sessions(
    session: AsyncSession, principal: Principal, where: SessionFilter, *, limit: int = 100, offset: int = 0
) -> tuple[list[RemoteSession], int]:
    """Sessions on devices the caller may reach, newest first, and the total."""
    conditions: list[ColumnElement[bool]] = []
    scope = access.device_condition(await access.scope_for(session, principal))
    if scope is not None:
        conditions.append(RemoteSession.device_id.in_(select(Device.id).where(scope)))
    for column, value in (
        (RemoteSession.device_id, where.device_id),
        (RemoteSession.state, where.state),
        (RemoteSession.owner, where.owner),
        (RemoteSession.incident_id, where.incident_id),
    ):
        if value is not None:
            conditions.append(column == value)
    total = await session.scalar(select(func.count()).select_from(RemoteSession).where(*conditions))
    rows = await session.scalars(
        select(RemoteSession)
        .where(*conditions)
        .order_by(RemoteSession.created_at.desc(), RemoteSession.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total or 0


class SessionService:
    """Opens, starts, closes and expires sessions; sends the consent requests through the
    command service (so they are signed, recorded and audited like any command)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], commands: CommandService, settings: SessionSettings
    ) -> None:
        self._sessions = sessions
        self._commands = commands
        self.settings = settings

    # -- reading ---------------------------------------------------------------------------------
    async def get(self, principal: Principal, session_id: str) -> RemoteSession:
        async with self._sessions() as session:
            return await self._load(session, principal, session_id)

    @staticmethod
    async def _load(
        session: AsyncSession, principal: Principal, session_id: str, *, lock: bool = False
    ) -> RemoteSession:
        query = select(RemoteSession).where(RemoteSession.id == session_id)
        if lock:
            query = query.with_for_update().execution_options(populate_existing=True)
        remote = await session.scalar(query)
        if remote is None:
            raise NotFound("session", session_id)
        try:
            await access.check_device(session, principal, remote.device_id)
        except NotFound as exc:
            raise NotFound("session", session_id) from exc
        return remote

    async def queue_position(self, remote: RemoteSession) -> int | None:
        """1 for the next session to start, … ; None when not queued."""
        if remote.state != St.REQUESTED.value:
            return None
        async with self._sessions() as session:
            ahead = await session.scalar(
                select(func.count())
                .select_from(RemoteSession)
                .where(
                    RemoteSession.device_id == remote.device_id,
                    RemoteSession.state == St.REQUESTED.value,
                    RemoteSession.created_at < remote.created_at,
                )
            )
        return (ahead or 0) + 1

    async def report(self, principal: Principal, session_id: str) -> dict[str, Any]:
        """The frozen report of an ended session; a live one (``final: false``) otherwise."""
        async with self._sessions() as session:
            remote = await self._load(session, principal, session_id)
            if remote.report is None:
                return await build_report(session, remote)
            incident = await session.get(Incident, remote.incident_id) if remote.incident_id else None
            return {**remote.report, "incident": incident_summary(incident)}

    # -- opening ---------------------------------------------------------------------------------
    async def open(
        self,
        principal: Principal,
        device_id: str,
        *,
        incident_id: int | None = None,
        reason: str = "",
        time_limit_s: float | None = None,
    ) -> RemoteSession:
        limit = time_limit_s if time_limit_s is not None else self.settings.default_time_limit
        if not 0 < limit <= self.settings.max_time_limit:
            raise InvalidInput(
                f"time_limit_s: must be more than 0 and at most {self.settings.max_time_limit:g} "
                "(sessions.max_time_limit)",
                field="time_limit_s",
            )
        async with self._sessions() as session:
            device = await access.check_device(session, principal, device_id)
            if device.decommissioned_at is not None:
                raise Conflict(f"device {device_id} is decommissioned: no sessions")
            # serialise opens on one device (PostgreSQL; SQLite serialises writers anyway)
            await session.execute(select(Device.id).where(Device.id == device_id).with_for_update())
            if incident_id is not None:
                incident = await session.get(Incident, incident_id)
                if incident is None or incident.device_id != device_id:
                    raise InvalidInput(
                        f"incident_id: incident {incident_id} is not an incident of device {device_id}",
                        field="incident_id",
                    )
            await self._check_queue(session, device_id)
            now = utcnow()
            remote = RemoteSession(
                id=_new_id(),
                device_id=device_id,
                incident_id=incident_id,
                owner=principal.name,
                reason=reason,
                state=St.REQUESTED.value,
                time_limit_s=limit,
                created_at=now,
            )
            session.add(remote)
            transition(
                session, remote, "requested", actor=principal.actor, at=now, reason=reason, time_limit_s=limit
            )
            # opening a session for an incident is the first response (t_respond)
            await _note_incident(
                session, remote, "opened", actor=principal.actor, at=now, respond=True, reason=reason
            )
            await session.commit()
            session_id = remote.id
        await self.start_next(device_id)  # a failure to ask for consent ends the session and is raised
        return await self.get(principal, session_id)

    async def _check_queue(self, session: AsyncSession, device_id: str) -> None:
        holder = await session.scalar(
            select(RemoteSession)
            .where(RemoteSession.device_id == device_id, RemoteSession.state.in_(HOLDING))
            .order_by(RemoteSession.created_at)
            .limit(1)
        )
        if holder is None:
            return
        waiting = await session.scalar(
            select(func.count())
            .select_from(RemoteSession)
            .where(RemoteSession.device_id == device_id, RemoteSession.state == St.REQUESTED.value)
        )
        if (waiting or 0) >= self.settings.max_queue:
            since = holder.activated_at or holder.consent_requested_at or holder.created_at
            raise Conflict(
                f"device {device_id} is busy: session {holder.id} by {holder.owner} is {holder.state} "
                f"since {since.isoformat()}, and {waiting} session(s) already wait "
                f"(sessions.max_queue = {self.settings.max_queue}); try again later or ask {holder.owner}"
            )

    async def start_next(self, device_id: str) -> RemoteSession | None:
        """Start the oldest queued session on the device if nothing holds it: active at once, or
        a consent request to the local operator on an attended device."""
        async with self._sessions() as session:
            device = await session.scalar(
                select(Device)
                .where(Device.id == device_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if device is None:
                return None
            holding = await session.scalar(
                select(func.count())
                .select_from(RemoteSession)
                .where(RemoteSession.device_id == device_id, RemoteSession.state.in_(HOLDING))
            )
            if holding:
                return None
            remote = await session.scalar(
                select(RemoteSession)
                .where(RemoteSession.device_id == device_id, RemoteSession.state == St.REQUESTED.value)
                .order_by(RemoteSession.created_at, RemoteSession.id)
                .limit(1)
                .with_for_update()
            )
            if remote is None:
                return None
            now = utcnow()
            attended = await policy.device_attended(session, device)
            if attended:
                remote.requires_consent = True
                remote.all_commands_need_consent = True
                remote.consent_requested_at = now
                transition(
                    session, remote, "consent.requested", actor="server", at=now, state=St.AWAITING_CONSENT
                )
            else:
                _activate(remote, now)
                transition(session, remote, "activated", actor="server", at=now, state=St.ACTIVE)
                await _note_incident(session, remote, "activated", actor="server", at=now)
            await session.commit()
        if attended:
            await self._send_consent_request(
                remote, all_commands=True, until=now + timedelta(seconds=remote.time_limit_s)
            )
        return remote

    async def _owner(self, session: AsyncSession, remote: RemoteSession) -> Principal:
        user = await session.scalar(select(User).where(User.name == remote.owner))
        if user is None:
            raise Conflict(f"session {remote.id}: its owner {remote.owner!r} no longer exists")
        return Principal(user_id=user.id, name=user.name, role=Role(user.role), customer_id=user.customer_id)

    async def _send_consent_request(
        self, remote: RemoteSession, *, all_commands: bool, until: datetime
    ) -> Command:
        """Sign and send ``session.consent``. A failure (no signing key, …) is raised; a session
        that was waiting for this request ends ``expired`` with the reason (nothing would ever
        answer it), so the device is free for the next one."""
        async with self._sessions() as session:
            owner = await self._owner(session, remote)
        args = {
            "technician": remote.owner,
            "reason": remote.reason,
            "until": protocol.format_ts(until),
            "all_commands": all_commands,
        }
        timeout = min(self.settings.consent_wait, 86400.0)
        try:
            command = await self._commands.issue(
                owner,
                remote.device_id,
                protocol.CONSENT_ACTION,
                args,
                timeout_s=timeout,
                session_id=remote.id,
            )
        except ServerError as exc:
            async with self._sessions() as session:
                current = await session.get(RemoteSession, remote.id)
                if current is not None and current.state == St.AWAITING_CONSENT.value and all_commands:
                    why = f"the consent request could not be sent: {exc.message}"
                    await _end(session, current, St.EXPIRED, "expired", actor="server", at=utcnow(), why=why)
                    await session.commit()
            raise
        async with self._sessions() as session:
            await session.execute(
                update(RemoteSession)
                .where(RemoteSession.id == remote.id)
                .values(consent_command_id=command.id)
            )
            await session.commit()
        return command

    async def request_consent(self, principal: Principal, session_id: str) -> RemoteSession:
        """Ask the local operator to approve ``needs_consent`` actions in an active session."""
        async with self._sessions() as session:
            remote = await self._load(session, principal, session_id, lock=True)
            self._check_owner(principal, remote)
            if remote.state != St.ACTIVE.value:
                raise Conflict(
                    f"session {remote.id} is {remote.state}: consent can be requested in an active session"
                )
            now = utcnow()
            if policy.consent_valid(remote, now):
                raise Conflict(
                    f"session {remote.id} already holds consent by {remote.consent_by} until "
                    f"{remote.consent_expires_at.isoformat() if remote.consent_expires_at else '?'}"
                )
            remote.requires_consent = True
            remote.consent_requested_at = now
            transition(session, remote, "consent.requested", actor=principal.actor, at=now)
            await session.commit()
        assert remote.expires_at is not None
        await self._send_consent_request(remote, all_commands=False, until=remote.expires_at)
        return await self.get(principal, session_id)

    @staticmethod
    def _check_owner(principal: Principal, remote: RemoteSession) -> None:
        if principal.name != remote.owner and principal.role is not Role.ADMIN:
            raise Forbidden(
                f"session {remote.id} belongs to {remote.owner}: only its owner or an admin may do this"
            )

    # -- commands ----------------------------------------------------------------------------------
    async def run_command(
        self,
        principal: Principal,
        session_id: str,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Command:
        """A command in the session (owner or admin, active session; the policy is checked by
        :meth:`CommandService.issue` before signing)."""
        async with self._sessions() as session:
            remote = await self._load(session, principal, session_id)
        self._check_owner(principal, remote)
        command = await self._commands.issue(
            principal, remote.device_id, action, args, timeout_s=timeout_s, session_id=remote.id
        )
        async with self._sessions() as session:
            session.add(
                SessionEntry(
                    session_id=remote.id,
                    ts=command.issued_at,
                    kind="command",
                    actor=principal.actor,
                    detail={"command_id": command.id, "action": command.action, "args": command.args},
                )
            )
            await session.commit()
        return command

    # -- ending ------------------------------------------------------------------------------------
    async def close(
        self, principal: Principal, session_id: str, *, outcome: str, fixed: bool | None
    ) -> RemoteSession:
        async with self._sessions() as session:
            remote = await self._load(session, principal, session_id, lock=True)
            self._check_owner(principal, remote)
            if St(remote.state).terminal:
                raise Conflict(f"session {remote.id} is already {remote.state}")
            remote.outcome = outcome
            remote.fixed = fixed
            await _end(
                session,
                remote,
                St.CLOSED,
                "closed",
                actor=principal.actor,
                at=utcnow(),
                outcome=outcome,
                fixed=fixed,
            )
            await session.commit()
            device_id = remote.device_id
        await self._start_quietly(device_id)
        return await self.get(principal, session_id)

    async def sweep(self, now: datetime | None = None) -> list[str]:
        """Expire sessions past their time limit and consent requests past ``consent_wait``;
        start the next queued session where a device is free. Returns the sessions changed."""
        now = now or utcnow()
        wait = timedelta(seconds=self.settings.consent_wait)
        changed: list[str] = []
        async with self._sessions() as session:
            due = await session.scalars(
                select(RemoteSession)
                .where(
                    ((RemoteSession.state == St.ACTIVE.value) & (RemoteSession.expires_at <= now))
                    | (
                        (RemoteSession.state == St.AWAITING_CONSENT.value)
                        & (RemoteSession.consent_requested_at <= now - wait)
                    )
                )
                .with_for_update()
            )
            for remote in list(due):
                why = "time limit reached" if remote.state == St.ACTIVE.value else "no consent in time"
                await _end(session, remote, St.EXPIRED, "expired", actor="server", at=now, why=why)
                changed.append(remote.id)
            await session.commit()
            queued = list(
                await session.scalars(
                    select(RemoteSession.device_id)
                    .where(RemoteSession.state == St.REQUESTED.value)
                    .distinct()
                )
            )
        for device_id in queued:
            started = await self._start_quietly(device_id)
            if started is not None:
                changed.append(started.id)
        return changed

    async def _start_quietly(self, device_id: str) -> RemoteSession | None:
        try:
            return await self.start_next(device_id)
        except ServerError as exc:
            logger.warning("next session on %s not started: %s", device_id, exc.message)
            return None
