"""The incident queue's reads: one SQL statement per page (the incident service's filter
conditions, the caller's device scope, the assignee, the age and the SLA state, ordered by the
next SLA deadline), the service-level clock of each incident, and the technicians an incident
may be assigned to.

**Service levels** (settings ``incidents.sla_ack_minutes`` and ``incidents.sla_restore_hours``,
one target per priority P1…P4; docs/incidents.md): from detection to the first
acknowledgement, and from detection to the equipment restored (``t_restored``; a resolution
without a restore time stops it too). A target is *breached* when its time passed before the
step happened — or has passed and the step has not happened yet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from server.db.models import (
    Customer,
    Device,
    Incident,
    IncidentStatus,
    Role,
    Site,
    TechnicianAssignment,
    User,
)
from server.incidents.service import IncidentFilter, filter_conditions
from server.settings import IncidentSettings

__all__ = [
    "AGES",
    "QUEUE_STATES",
    "QueueQuery",
    "QueueRow",
    "SlaClock",
    "SlaTargets",
    "assignable",
    "can_be_assigned",
    "queue_page",
    "sla_clock",
]

OPEN, ACK = IncidentStatus.OPEN.value, IncidentStatus.ACKNOWLEDGED.value
QUEUE_STATES = ("active", *(s.value for s in IncidentStatus), "all")
"""``active``: open or acknowledged (the queue's default); ``all``: every status."""
AGES = {"1h": 3600, "4h": 4 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
"""The age filter: detected at least this long ago."""


@dataclass(frozen=True, slots=True)
class SlaTargets:
    """Seconds per priority (index 0 is P1)."""

    ack_s: tuple[float, ...]
    restore_s: tuple[float, ...]

    @classmethod
    def of(cls, settings: IncidentSettings) -> SlaTargets:
        return cls(
            tuple(60.0 * m for m in settings.sla_ack_minutes),
            tuple(3600.0 * h for h in settings.sla_restore_hours),
        )

    def ack(self, priority: int) -> float:
        return self.ack_s[min(4, max(1, priority)) - 1]

    def restore(self, priority: int) -> float:
        return self.restore_s[min(4, max(1, priority)) - 1]

    def _by_priority(self, targets: tuple[float, ...]) -> ColumnElement[float]:
        return case(
            (Incident.priority <= 1, targets[0]),
            (Incident.priority == 2, targets[1]),
            (Incident.priority == 3, targets[2]),
            else_=targets[3],
        )

    def ack_due_s(self) -> ColumnElement[float]:
        return Incident.detect_s + self._by_priority(self.ack_s)

    def restore_due_s(self) -> ColumnElement[float]:
        return Incident.detect_s + self._by_priority(self.restore_s)

    def breached(self, now_s: float) -> ColumnElement[bool]:
        """SQL: either target breached (as :func:`sla_clock` says)."""
        return or_(
            func.coalesce(Incident.ack_s, Incident.resolved_s, now_s) > self.ack_due_s(),
            func.coalesce(Incident.restored_s, Incident.resolved_s, now_s) > self.restore_due_s(),
        )

    def next_due_s(self) -> ColumnElement[float]:
        """SQL: the deadline that matters next (acknowledge, then restore), for the queue order."""
        return case(
            (and_(Incident.ack_s.is_(None), Incident.resolved_s.is_(None)), self.ack_due_s()),
            else_=self.restore_due_s(),
        )


@dataclass(frozen=True, slots=True)
class SlaClock:
    """An incident's service-level state now: the step it waits for (``ack``, ``restore``, or
    None when both happened), its deadline, and which targets were breached."""

    waiting_for: str | None
    due: datetime | None
    left_s: float | None  # negative: overdue by that much
    ack_breached: bool
    restore_breached: bool

    @property
    def breached(self) -> bool:
        return self.ack_breached or self.restore_breached


def _s(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def sla_clock(incident: Incident, targets: SlaTargets, now: datetime) -> SlaClock:
    detect = incident.t_detect.timestamp()
    now_s = now.timestamp()
    ack_due = detect + targets.ack(incident.priority)
    restore_due = detect + targets.restore(incident.priority)
    resolved = _s(incident.t_resolved)
    acked = _s(incident.t_ack) or resolved
    restored = _s(incident.t_restored) or resolved
    waiting, due = None, None
    if acked is None:
        waiting, due = "ack", ack_due
    elif restored is None:
        waiting, due = "restore", restore_due
    return SlaClock(
        waiting_for=waiting,
        due=None if due is None else datetime.fromtimestamp(due, UTC),
        left_s=None if due is None else due - now_s,
        ack_breached=(acked if acked is not None else now_s) > ack_due,
        restore_breached=(restored if restored is not None else now_s) > restore_due,
    )


@dataclass(frozen=True, slots=True)
class QueueQuery:
    state: str = "active"
    priority: int | None = None
    customer: int | None = None
    site: int | None = None
    model: str | None = None
    fault: str | None = None
    assignee: str | None = None  # a user name, or "" for unassigned
    age: str | None = None  # a key of AGES
    breached: bool = False
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class QueueRow:
    incident: Incident
    device: Device
    customer: str | None
    site: str | None
    sla: SlaClock


def _conditions(where: QueueQuery, targets: SlaTargets, now: datetime) -> list[ColumnElement[bool]]:
    status = where.state if where.state not in ("active", "all") else None
    conditions = filter_conditions(
        IncidentFilter(
            status=status,
            open_only=where.state == "active",
            customer_id=where.customer,
            site_id=where.site,
            model=where.model,
            fault_code=where.fault,
            priority=where.priority,
            until=None if where.age is None else now - timedelta(seconds=AGES[where.age]),
        )
    )
    if where.assignee is not None:
        conditions.append(
            Incident.assigned_to.is_(None) if where.assignee == "" else Incident.assigned_to == where.assignee
        )
    if where.breached:
        conditions.append(targets.breached(now.timestamp()))
    return conditions


async def queue_page(
    session: AsyncSession,
    where: QueueQuery,
    *,
    scope: ColumnElement[bool] | None,
    targets: SlaTargets,
    now: datetime,
) -> tuple[list[QueueRow], int]:
    """One page of the queue, next deadline first (then priority, then oldest), and the total."""
    conditions = _conditions(where, targets, now) + ([] if scope is None else [scope])
    stmt = (
        select(Incident, Device, Customer.name, func.coalesce(Site.name, Device.site), func.count().over())
        .join(Device, Device.id == Incident.device_id)
        .outerjoin(Customer, Customer.id == Device.customer_id)
        .outerjoin(Site, Site.id == Device.site_id)
        .where(*conditions)
        .order_by(targets.next_due_s(), Incident.priority, Incident.detect_s, Incident.id)
        .limit(where.limit)
        .offset(where.offset)
    )
    result = (await session.execute(stmt)).all()
    if not result:
        total = 0
        if where.offset:
            total = (
                await session.scalar(
                    select(func.count())
                    .select_from(Incident)
                    .join(Device, Device.id == Incident.device_id)
                    .where(*conditions)
                )
                or 0
            )
        return [], total
    rows = [
        QueueRow(incident, device, customer, site, sla_clock(incident, targets, now))
        for incident, device, customer, site, _ in result
    ]
    return rows, int(result[0][4])


async def assignable(
    session: AsyncSession, customer_ids: set[int | None], *, every: bool = True
) -> list[str]:
    """Technicians (not disabled) who may work on devices of every one of ``customer_ids`` (or,
    ``every=False``, of at least one), by name. None stands for a device not yet placed with a
    customer, which every technician reaches."""
    technicians = list(
        await session.execute(
            select(User.id, User.name)
            .where(User.role == Role.TECHNICIAN.value, User.disabled_at.is_(None))
            .order_by(User.name)
        )
    )
    needed = {c for c in customer_ids if c is not None}
    if not needed or (not every and None in customer_ids):
        return [name for _, name in technicians]
    have: dict[int, set[int]] = {}
    for user_id, customer_id in await session.execute(
        select(TechnicianAssignment.user_id, TechnicianAssignment.customer_id).where(
            TechnicianAssignment.customer_id.in_(sorted(needed))
        )
    ):
        have.setdefault(int(user_id), set()).add(int(customer_id))
    if every:
        return [name for user_id, name in technicians if needed <= have.get(int(user_id), set())]
    return [name for user_id, name in technicians if needed & have.get(int(user_id), set())]


async def can_be_assigned(session: AsyncSession, name: str, customer_id: int | None) -> bool:
    """Whether the technician ``name`` may work on a device of ``customer_id``."""
    return name in await assignable(session, {customer_id})
