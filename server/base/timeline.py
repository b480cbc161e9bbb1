"""The incident timeline (``incident_timeline``): append-only entries, one per change.

Kinds written by the server: ``opened``, ``fault.joined``, ``fault.recurred``, ``escalated``,
``restored``, ``restore.withdrawn``, ``resolved``, ``resolution.withdrawn``, ``reopened``,
``rebuilt``, ``repeat.of`` (a new incident: the fault came back after the reopen window) and
``repeated`` (on the earlier incident it repeats), ``command`` (a person's command to the device
during the incident). By people
(through the API): ``acknowledged``, ``assigned``, ``dispatched``, ``onsite``, ``guidance``,
``resolved``, ``reopened``, ``closed``, ``updated``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Incident, IncidentEntry
from server.db.types import utcnow

__all__ = ["REMEDIATION", "SERVER", "note"]

SERVER = "server"
REMEDIATION = frozenset({"command", "assigned", "dispatched", "onsite", "guidance"})
"""Entry kinds that are a person acting on the incident: the device did not recover by itself."""


def note(
    session: AsyncSession,
    incident: Incident,
    kind: str,
    *,
    actor: str = SERVER,
    ts: datetime | None = None,
    **detail: Any,
) -> IncidentEntry:
    entry = IncidentEntry(incident_id=incident.id, ts=ts or utcnow(), kind=kind, actor=actor, detail=detail)
    session.add(entry)
    return entry
