"""Protocol messages with chosen device and receive times, for incident/state tests.

    dev = Device("inc-1", skew=0.0)            # device clock = server clock + skew
    await feed(writer, dev.status(0), dev.raised(100, "E1"), dev.cleared(400, "E1"))
    await tracker.sweep(sessions, now=at(500))

``at(s)`` is ``T0 + s`` seconds (server clock); a message's ``ts`` is ``at(s) + skew`` and it is
received at ``at(s) + delay`` (``received=`` overrides: buffered messages arrive late).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from server.db.models import Incident, IncidentEntry, StateInterval, TransientFault
from server.incidents import IncidentTracker
from server.ingest import BatchWriter, Decoded
from server.settings import IncidentSettings

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
Sessions = async_sessionmaker[AsyncSession]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def tracker(**overrides: Any) -> IncidentTracker:
    values: dict[str, Any] = {
        "fault_debounce": 60,
        "offline_grace": 300,
        "offline_flap_window": 300,
        "clock_skew_tolerance": 5,
    }
    values.update(overrides)
    return IncidentTracker(IncidentSettings(**values))


class Device:
    def __init__(self, device_id: str, *, skew: float = 0.0, delay: float = 0.05) -> None:
        self.id = device_id
        self.skew = skew
        self.delay = delay
        self._seq = itertools.count(1)

    def _times(self, when: float, received: float | None) -> tuple[datetime, datetime]:
        return at(when + self.skew), at(received if received is not None else when + self.delay)

    def event(self, when: float, name: str, *, received: float | None = None, **fields: Any) -> Decoded:
        ts, rx = self._times(when, received)
        return Decoded(
            protocol.Event(device_id=self.id, seq=next(self._seq), ts=ts, event=name, **fields), rx
        )

    def raised(
        self,
        when: float,
        code: str = "E1",
        *,
        effect: str | None = "down",
        severity: str = "error",
        received: float | None = None,
    ) -> Decoded:
        data = {"effect": effect} if effect else {}
        return self.event(when, "fault.raised", code=code, severity=severity, data=data, received=received)

    def cleared(self, when: float, code: str = "E1", *, received: float | None = None) -> Decoded:
        return self.event(when, "fault.cleared", code=code, received=received)

    def state(self, when: float, to: str, *, received: float | None = None) -> Decoded:
        return self.event(when, "state.changed", data={"to": to}, received=received)

    def status(
        self,
        when: float,
        *,
        online: bool = True,
        state: str | None = "running",
        received: float | None = None,
    ) -> Decoded:
        ts, rx = self._times(when, received)
        return Decoded(
            protocol.Status(
                device_id=self.id,
                seq=next(self._seq),
                ts=ts,
                online=online,
                state=protocol.EquipmentState(state) if state else None,
            ),
            rx,
        )

    def inventory(
        self, when: float, *, site: str | None = None, faults: list[dict[str, Any]] | None = None
    ) -> Decoded:
        ts, rx = self._times(when, None)
        return Decoded(
            protocol.Inventory(
                device_id=self.id,
                seq=next(self._seq),
                ts=ts,
                equipment=protocol.EquipmentInfo(kind="printer", model="LX-9", serial=f"SN-{self.id}"),
                system=protocol.SystemInfo(hostname=self.id),
                agent=protocol.AgentInfo(version="0.1.0"),
                site=site,
                config={"faults": faults or []},
            ),
            rx,
        )


async def feed(sessions: Sessions, incidents: IncidentTracker, *messages: Decoded) -> None:
    """Write ``messages`` as one ingest batch."""
    await BatchWriter(sessions, incidents=incidents).write(list(messages))


async def feed_each(sessions: Sessions, incidents: IncidentTracker, *messages: Decoded) -> None:
    """Write ``messages`` one batch each (as a live device's would arrive)."""
    for message in messages:
        await feed(sessions, incidents, message)


async def intervals(sessions: Sessions, device_id: str) -> list[tuple[str, float, float | None]]:
    """``(state, start, end)`` in seconds after T0; asserts the writer's invariant the KPI engine
    relies on (docs/incidents.md): non-overlapping and contiguous, only the last one open."""
    async with sessions() as session:
        rows = (
            await session.scalars(
                select(StateInterval)
                .where(StateInterval.device_id == device_id)
                .order_by(StateInterval.start_s)
            )
        ).all()
        for earlier, later in itertools.pairwise(rows):
            assert earlier.end_s == later.start_s, f"{device_id}: {earlier.end_s} -> {later.start_s}"
        return [
            (
                r.state,
                round(r.start_s - T0.timestamp(), 3),
                None if r.end_s is None else round(r.end_s - T0.timestamp(), 3),
            )
            for r in rows
        ]


async def incidents_of(sessions: Sessions, device_id: str) -> list[Incident]:
    async with sessions() as session:
        return list(
            await session.scalars(
                select(Incident).where(Incident.device_id == device_id).order_by(Incident.id)
            )
        )


async def transients_of(sessions: Sessions, device_id: str) -> list[TransientFault]:
    async with sessions() as session:
        return list(
            await session.scalars(
                select(TransientFault)
                .where(TransientFault.device_id == device_id)
                .order_by(TransientFault.id)
            )
        )


async def timeline_of(sessions: Sessions, incident_id: int) -> list[IncidentEntry]:
    async with sessions() as session:
        return list(
            await session.scalars(
                select(IncidentEntry)
                .where(IncidentEntry.incident_id == incident_id)
                .order_by(IncidentEntry.ts, IncidentEntry.id)
            )
        )


def secs(value: datetime | None) -> float | None:
    """Seconds after T0 (rounded to ms)."""
    return None if value is None else round((value - T0).total_seconds(), 3)
