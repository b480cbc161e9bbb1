"""The periodic job rebuilds the rollups in batches (``limit``, server/incidents/tracker.py):
a batch rebuilds at most ``limit`` devices, bound as a parameter, and leaves the rest dirty."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import KpiIncidentDirty, KpiRollupDirty
from server.kpi.generate import FleetShape, generate
from server.kpi.incident_rollups import refresh_incident_rollups
from server.kpi.records import insert_dataset
from server.kpi.rollups import refresh_rollups


async def test_a_batch_rebuilds_at_most_its_limit(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await insert_dataset(session, generate(FleetShape(devices=5, customers=2, days=20, seed=3)))
        await session.commit()
    for table, refresh in ((KpiRollupDirty, refresh_rollups), (KpiIncidentDirty, refresh_incident_rollups)):
        async with sessions() as session:
            dirty = await session.scalar(select(func.count()).select_from(table))
            assert dirty is not None
            assert dirty > 2
            assert await refresh(session, limit=2) == 2
            await session.commit()
            assert await session.scalar(select(func.count()).select_from(table)) == dirty - 2
            assert await refresh(session, limit=100) == dirty - 2
            await session.commit()
            assert await session.scalar(select(func.count()).select_from(table)) == 0
