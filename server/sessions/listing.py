"""The session list for people (the console's ``/sessions`` and its CSV): the sessions on
devices the caller may reach — the same scope as :func:`server.sessions.service.list_sessions`
(``server.base.access``: ``scope_for`` and ``device_condition``), so the page and
``GET /api/v1/sessions`` never disagree about who sees which session — with the filters a
dispatcher asks for (live or ended, a device by part of its id, the technician, the device's
customer, site and model, the period it was opened in), live sessions first, then the newest.

It lives beside the service rather than in it: the API's list keeps its exact-match filters
and its order, and this one needs the device's placement joined in, which the API's does not."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from server.base import access
from server.base.users import Principal
from server.db.models import Command, Customer, Device, RemoteSession, SessionState, Site
from server.fleet.devices import escape_like, placement_conditions

__all__ = [
    "ENDED",
    "LIVE",
    "STATE_GROUPS",
    "SessionQuery",
    "SessionRow",
    "command_counts",
    "owners",
    "session_page",
]

LIVE = tuple(state.value for state in SessionState if not state.terminal)
"""Requested (queued), awaiting consent, active: a session still holding or waiting for a device."""
ENDED = tuple(state.value for state in SessionState if state.terminal)
"""Closed by the technician, expired (time limit, no consent in time) or denied by the operator."""
STATE_GROUPS: dict[str, tuple[str, ...] | None] = {"live": LIVE, "closed": ENDED, "all": None}
"""The list's ``state`` filter: ``closed`` is every ended session, whatever ended it."""
_COUNT_CHUNK = 500  # session ids per command-count query (bind parameters stay few)


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """What the list asks for; None (or empty) means no restriction."""

    states: tuple[str, ...] | None = None
    device: str | None = None  # part of the device id, any case
    owner: str | None = None  # the technician's user name, exactly
    customer: int | None = None
    site: int | None = None
    model: str | None = None
    since: datetime | None = None  # opened at or after
    until: datetime | None = None  # opened before
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One session with its device's model and placement and how many commands it sent."""

    remote: RemoteSession
    model: str | None
    customer: str | None
    site: str | None
    commands: int


async def _scope(session: AsyncSession, principal: Principal) -> list[ColumnElement[bool]]:
    condition = access.device_condition(await access.scope_for(session, principal))
    return [] if condition is None else [condition]


def _conditions(where: SessionQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.states is not None:
        conditions.append(RemoteSession.state.in_(where.states))
    if where.device:
        pattern = f"%{escape_like(where.device.lower())}%"
        conditions.append(func.lower(RemoteSession.device_id).like(pattern, escape="\\"))
    if where.owner:
        conditions.append(RemoteSession.owner == where.owner)
    conditions.extend(placement_conditions(where.customer, where.site, where.model))
    if where.since is not None:
        conditions.append(RemoteSession.created_at >= where.since)
    if where.until is not None:
        conditions.append(RemoteSession.created_at < where.until)
    return conditions


async def command_counts(session: AsyncSession, session_ids: Iterable[str]) -> dict[str, int]:
    """How many commands each session sent (consent requests included: they are commands)."""
    ids = sorted(set(session_ids))
    counts: dict[str, int] = {}
    for start in range(0, len(ids), _COUNT_CHUNK):
        chunk = ids[start : start + _COUNT_CHUNK]
        for session_id, n in await session.execute(
            select(Command.session_id, func.count())
            .where(Command.session_id.in_(chunk))
            .group_by(Command.session_id)
        ):
            counts[str(session_id)] = int(n)
    return counts


async def session_page(
    session: AsyncSession, principal: Principal, where: SessionQuery
) -> tuple[list[SessionRow], int]:
    """One page of the sessions ``principal`` may see that match ``where`` — live ones first,
    then newest first — and how many match in all."""
    conditions = await _scope(session, principal) + _conditions(where)
    total = await session.scalar(
        select(func.count())
        .select_from(RemoteSession)
        .join(Device, Device.id == RemoteSession.device_id)
        .where(*conditions)
    )
    live_first = case((RemoteSession.state.in_(LIVE), 0), else_=1)
    result = (
        await session.execute(
            select(RemoteSession, Device.model, Customer.name, func.coalesce(Site.name, Device.site))
            .join(Device, Device.id == RemoteSession.device_id)
            .outerjoin(Customer, Customer.id == Device.customer_id)
            .outerjoin(Site, Site.id == Device.site_id)
            .where(*conditions)
            .order_by(live_first, RemoteSession.created_at.desc(), RemoteSession.id)
            .limit(where.limit)
            .offset(where.offset)
        )
    ).all()
    counts = await command_counts(session, (row[0].id for row in result))
    rows = [
        SessionRow(remote, model, customer, site, counts.get(remote.id, 0))
        for remote, model, customer, site in result
    ]
    return rows, total or 0


async def owners(session: AsyncSession, principal: Principal) -> list[str]:
    """The technicians who opened a session the caller may see (the technician filter's
    choices), by name, at most 200."""
    query = (
        select(RemoteSession.owner)
        .join(Device, Device.id == RemoteSession.device_id)
        .where(*await _scope(session, principal))
        .distinct()
        .order_by(RemoteSession.owner)
        .limit(200)
    )
    return [str(name) for name in await session.scalars(query)]
