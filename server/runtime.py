"""The composition root's product: every service and periodic job the server runs, built once by
the app's lifespan (server/app.py) and held on ``app.state.runtime`` for the routes, the console
and the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.commands.service import CommandService
from server.incidents import IncidentTracker
from server.ingest.stats import IngestStats
from server.mqtt import MqttLink
from server.periodic import Periodic
from server.sessions.service import SessionService
from server.settings import ServerSettings

__all__ = ["Runtime"]


@dataclass(slots=True)
class Runtime:
    settings: ServerSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    commands: CommandService
    stats: IngestStats
    link: MqttLink | None  # None when mqtt.enabled is false
    remote_sessions: SessionService | None = None
    incidents: IncidentTracker | None = None  # None when incidents.enabled is false
    jobs: list[Periodic] = field(default_factory=list)

    @property
    def mqtt_connected(self) -> bool:
        return self.link is not None and self.link.connected

    @property
    def session_service(self) -> SessionService:
        """The remote-session service (built with the runtime; one for every caller)."""
        if self.remote_sessions is None:
            self.remote_sessions = SessionService(self.sessions, self.commands, self.settings.sessions)
        return self.remote_sessions

    def job(self, name: str) -> Periodic:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(f"no periodic job {name!r}; the runtime has {[j.name for j in self.jobs]}")

    async def sweep_all(self, now: datetime) -> dict[str, object]:
        """One round of every clocked job at ``now``, in their order (incidents, then remote
        sessions, then commands): what a stepped run calls at the instants it chooses, with
        ``jobs_in_real_time`` off. Errors propagate: a stepped run must not go on past them."""
        return {job.name: await job.round(now) for job in self.jobs if job.clocked}
