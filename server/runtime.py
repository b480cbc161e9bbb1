"""What the app's lifespan builds and the routes use: one object on ``app.state.runtime``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.ingest.stats import IngestStats
from server.mqtt import MqttLink
from server.services.commands import CommandService
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

    @property
    def mqtt_connected(self) -> bool:
        return self.link is not None and self.link.connected
