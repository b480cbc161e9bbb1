"""Similar past incidents beside the suggested articles (issue 15, item 5): the resolved
incidents in the caller's scope that share a fault code with this one — the same model first,
then the newest — each with how it was solved and why it is shown. An article holds what
someone wrote down; these are what actually happened, including the fixes nobody wrote up yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Text, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.base import access
from server.base.users import Principal
from server.db.models import Device, Incident, IncidentStatus

__all__ = ["CANDIDATES", "SimilarIncident", "fault_codes", "similar_incidents"]

CANDIDATES = 200
"""Resolved incidents read at most (newest first) before ranking by model."""


@dataclass(frozen=True, slots=True)
class SimilarIncident:
    id: int
    device_id: str
    model: str | None
    fault_code: str | None
    channel: str | None
    cause: str
    resolution: str
    resolved: datetime | None
    why: str


def fault_codes(incident: Incident) -> list[str]:
    """The incident's fault codes, its first one first, each once (what articles are matched by)."""
    return [c for c in dict.fromkeys([incident.fault_code, *(incident.codes or [])]) if c]


async def similar_incidents(
    session: AsyncSession, who: Principal, incident: Incident, *, limit: int = 5
) -> list[SimilarIncident]:
    """Up to ``limit`` resolved incidents like ``incident`` that ``who`` may see."""
    codes = fault_codes(incident)
    if not codes:
        return []
    device = await session.get(Device, incident.device_id)
    model = device.model if device is not None else None
    scope = access.device_condition(await access.scope_for(session, who))
    rows = await session.execute(
        select(Incident, Device.model)
        .join(Device, Device.id == Incident.device_id)
        .where(
            Incident.id != incident.id,
            Incident.status.in_([IncidentStatus.RESOLVED.value, IncidentStatus.CLOSED.value]),
            or_(
                Incident.fault_code.in_(codes),
                *(cast(Incident.codes, Text).contains(f'"{code}"', autoescape=True) for code in codes),
            ),
            *([] if scope is None else [scope]),
        )
        .order_by(Incident.resolved_s.desc(), Incident.id.desc())
        .limit(CANDIDATES)
    )
    found = []
    for past, past_model in rows:
        shared = [c for c in fault_codes(past) if c in codes]
        if not shared:
            continue  # a substring of another code matched the text form
        same_model = model is not None and past_model == model
        where = f"the same model ({model})" if same_model else f"another model ({past_model or 'unknown'})"
        why = f"same fault code {', '.join(shared)} on {where}"
        if past.device_id == incident.device_id:
            why += ", this very device"
        found.append(
            (
                not same_model,
                SimilarIncident(
                    id=past.id,
                    device_id=past.device_id,
                    model=past_model,
                    fault_code=past.fault_code,
                    channel=past.channel,
                    cause=past.cause,
                    resolution=past.resolution,
                    resolved=past.t_resolved,
                    why=why,
                ),
            )
        )
    found.sort(key=lambda pair: pair[0])  # stable: the newest first within each group
    return [item for _, item in found[:limit]]
