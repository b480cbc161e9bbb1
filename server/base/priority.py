"""Incident priority = f(urgency, business impact), ITIL-style (docs/incidents.md has the table).

Business impact is the device's criticality (1 low … 5 life-critical): the device's own, else
its site's, else its customer's, else 3. Urgency comes from the incident: a critical fault that
stops the device, a fault that stops it, an offline device (state unknown), a degradation.
Priority 1 is the most urgent, 4 the least.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Customer, Device, Site

__all__ = ["DEFAULT_CRITICALITY", "MATRIX", "URGENCIES", "criticality", "priority", "urgency"]

DEFAULT_CRITICALITY = 3
URGENCIES = ("critical", "down", "offline", "degraded")
MATRIX: dict[int, tuple[int, int, int, int]] = {
    # criticality: priority for urgency (critical, down, offline, degraded)
    5: (1, 1, 1, 2),
    4: (1, 2, 2, 3),
    3: (2, 2, 3, 3),
    2: (2, 3, 3, 4),
    1: (3, 3, 4, 4),
}


def urgency(kind: str, effect: str, severity: str) -> str:
    if kind == "offline":
        return "offline"
    if effect == "down":
        return "critical" if severity == "critical" else "down"
    return "degraded"


def priority(criticality_: int, kind: str, effect: str, severity: str) -> int:
    row = MATRIX[min(5, max(1, criticality_))]
    return row[URGENCIES.index(urgency(kind, effect, severity))]


async def criticality(session: AsyncSession, device_id: str) -> int:
    """The device's business impact: its own criticality, else its site's, else its customer's."""
    row = (
        await session.execute(
            select(Device.criticality, Site.criticality, Customer.criticality)
            .select_from(Device)
            .outerjoin(Site, Site.id == Device.site_id)
            .outerjoin(Customer, Customer.id == Device.customer_id)
            .where(Device.id == device_id)
        )
    ).first()
    if row is None:
        return DEFAULT_CRITICALITY
    for value in row:
        if value is not None:
            return int(value)
    return DEFAULT_CRITICALITY
