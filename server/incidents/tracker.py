"""Keeping every device's state intervals and incidents up to date: at ingest, in the batch's
transaction (:meth:`IncidentTracker.on_batch`), and by a sweeper for what falls due with no new
message (debounce windows, offline grace, planned maintenance ends, unfinished evidence).

Per device, the newest items continue the stored snapshot (``state_trackers``); an item older
than what was processed (store-and-forward data), a return from a long absence, a tracker
missing for a device with history, or a failure earlier on make it a rebuild from the device's
whole history instead. A batch's devices are processed in one savepoint; if that fails, device by
device, each in its own: the failing one is logged, rolled back and marked for a rebuild at the
next sweep. Incident work never costs a batch its messages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from server.db.dialect import insert_ignore
from server.db.models import Device, Incident, StateTracker
from server.db.types import utcnow
from server.incidents import evidence, history, sync
from server.incidents.engine import (
    Clock,
    EngineConfig,
    EngineState,
    Fold,
    Item,
    NeedsRebuild,
    attach_gaps,
    place,
    position_key,
)
from server.kpi.incident_rollups import refresh_incident_rollups
from server.kpi.rollups import refresh_rollups
from server.settings import IncidentSettings

__all__ = ["IncidentTracker"]

logger = logging.getLogger(__name__)

ROLLUP_BATCH = 500  # devices whose KPI rollup one sweep rebuilds at most

SWEEP_BATCH = 500


class IncidentTracker:
    """Derives state intervals and incidents from what devices report (docs/incidents.md)."""

    def __init__(self, settings: IncidentSettings) -> None:
        self.settings = settings
        self.config = EngineConfig(
            debounce=settings.fault_debounce,
            grace=settings.offline_grace,
            flap_window=settings.offline_flap_window,
            skew_tolerance=settings.clock_skew_tolerance,
        )
        self.reopen_window = settings.reopen_window_hours * 3600.0  # after the restore

    # -- ingest ----------------------------------------------------------------------------------

    async def on_batch(
        self, session: AsyncSession, fresh: Sequence[tuple[protocol.UpMessage, datetime]]
    ) -> None:
        """Process a batch of newly stored messages (``(message, received_at)``, arrival order)
        in the caller's transaction, after the messages themselves were written."""
        if not fresh:
            return
        await history.record_statuses(session, fresh)
        now = max(received for _, received in fresh).timestamp()
        raising = {
            m.device_id for m, _ in fresh if isinstance(m, protocol.Event) and m.event == "fault.raised"
        }
        catalogues = await history.load_catalogues(session, raising)
        items = history.items_from_messages(fresh, catalogues)
        quiet = sorted({m.device_id for m, _ in fresh} - set(items))
        due: set[str] = set()
        if quiet:
            due = set(
                await session.scalars(
                    select(StateTracker.device_id).where(
                        StateTracker.device_id.in_(quiet),
                        or_(StateTracker.due_s <= now, StateTracker.dirty.is_(True)),
                    )
                )
            )
        devices = sorted(set(items) | due)
        if not devices:
            return
        trackers, new = await self._prepare(session, devices, fresh)
        try:
            async with session.begin_nested():  # one savepoint for the batch: the fast path
                for device_id in devices:
                    await self.process(
                        session,
                        device_id,
                        items.get(device_id, []),
                        now,
                        tracker=trackers.get(device_id),
                        new=device_id in new,
                    )
        except (OperationalError, InterfaceError):
            raise
        except Exception:  # find the device that fails; the others go on
            logger.warning("incidents: batch failed; processing its devices one by one", exc_info=True)
            for device_id in devices:
                await self._guarded(session, device_id, items.get(device_id, []), now)

    async def _prepare(
        self, session: AsyncSession, devices: list[str], fresh: Sequence[tuple[protocol.UpMessage, datetime]]
    ) -> tuple[dict[str, StateTracker], set[str]]:
        """Lock the devices' trackers (in id order); name the devices first seen in this batch,
        whose whole history is in it (no rebuild needed to start their tracker)."""
        trackers = {
            tracker.device_id: tracker
            for tracker in await session.scalars(
                select(StateTracker)
                .where(StateTracker.device_id.in_(devices))
                .order_by(StateTracker.device_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        }
        missing = [device_id for device_id in devices if device_id not in trackers]
        if not missing:
            return trackers, set()
        first_in_batch: dict[str, float] = {}
        for message, received in fresh:
            stamp = received.timestamp()
            first_in_batch[message.device_id] = min(stamp, first_in_batch.get(message.device_id, stamp))
        rows = await session.execute(select(Device.id, Device.first_seen).where(Device.id.in_(missing)))
        new = {
            device_id
            for device_id, first_seen in rows
            if abs(first_seen.timestamp() - first_in_batch.get(device_id, -1.0)) < 1e-3
        }
        return trackers, new

    async def _guarded(self, session: AsyncSession, device_id: str, items: list[Item], now: float) -> None:
        try:
            async with session.begin_nested():
                await self.process(session, device_id, items, now)
        except (OperationalError, InterfaceError):
            raise  # the database itself: the caller retries the whole transaction
        except Exception:  # a failure here must not cost the batch its messages
            logger.exception("incidents: processing %s failed; it is rebuilt at the next sweep", device_id)
            await session.execute(
                insert_ignore(session, StateTracker).values(
                    device_id=device_id, dirty=True, snapshot={}, updated_at=utcnow()
                )
            )
            await session.execute(
                update(StateTracker).where(StateTracker.device_id == device_id).values(dirty=True)
            )

    # -- one device ------------------------------------------------------------------------------

    async def _lock(self, session: AsyncSession, device_id: str) -> StateTracker:
        await session.execute(
            insert_ignore(session, StateTracker).values(
                device_id=device_id, dirty=True, snapshot={}, updated_at=utcnow()
            )
        )
        tracker = await session.scalar(
            select(StateTracker)
            .where(StateTracker.device_id == device_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        assert tracker is not None
        return tracker

    async def process(
        self,
        session: AsyncSession,
        device_id: str,
        items: list[Item],
        now: float,
        *,
        tracker: StateTracker | None = None,
        new: bool = False,
    ) -> None:
        """Continue the device's derivation with ``items`` (arrival order) up to ``now``.

        ``tracker``: already locked; ``new``: the device has no history before ``items``."""
        if tracker is None and new:
            tracker = StateTracker(device_id=device_id, dirty=False, snapshot={}, updated_at=utcnow())
            session.add(tracker)
        elif tracker is None:
            tracker = await self._lock(session, device_id)
        if tracker.dirty:
            await self._rebuild(session, tracker, now)
            return
        state = EngineState.from_json(tracker.snapshot)
        clock = Clock(state.skew)
        place(items, clock, self.config.skew_tolerance)
        state.skew = clock.skew
        fold = Fold(self.config, state, full=False)
        try:
            for item in items:
                fold.feed(item)
            fold.advance(now)
        except NeedsRebuild as why:
            logger.debug("incidents: rebuilding %s (%s)", device_id, why)
            await self._rebuild(session, tracker, now)
            return
        await self._store(session, tracker, fold, now)

    async def rebuild(self, session: AsyncSession, device_id: str, now: float | None = None) -> None:
        """Recompute the device's intervals, transient faults and incident times from its history."""
        tracker = await self._lock(session, device_id)
        await self._rebuild(session, tracker, utcnow().timestamp() if now is None else now)

    async def _rebuild(self, session: AsyncSession, tracker: StateTracker, now: float) -> None:
        items = await history.load_items(session, tracker.device_id)
        clock = Clock()
        place(items, clock, self.config.skew_tolerance)
        attach_gaps(items)
        fold = Fold(self.config, EngineState(skew=clock.skew), full=True)
        for item in sorted(items, key=position_key):
            fold.feed(item)
        fold.advance(now)
        await self._store(session, tracker, fold, now)

    async def _store(self, session: AsyncSession, tracker: StateTracker, fold: Fold, now: float) -> None:
        await sync.store(session, tracker.device_id, fold, reopen_window=self.reopen_window, now=now)
        state = fold.state
        tracker.snapshot = state.to_json()
        tracker.mark_s = None if state.mark == float("-inf") else state.mark
        tracker.mark_seq = state.mark_seq
        tracker.due_s = fold.due()
        tracker.dirty = False
        tracker.updated_at = utcnow()

    # -- sweeping --------------------------------------------------------------------------------

    async def sweep(self, sessions: async_sessionmaker[AsyncSession], now: datetime | None = None) -> int:
        """Advance every device with something due (or marked for a rebuild) to ``now``, then
        look again at the evidence of every open incident. Returns the devices advanced."""
        at = (now or utcnow()).timestamp()
        async with sessions() as session:
            device_ids = list(
                await session.scalars(
                    select(StateTracker.device_id)
                    .where(or_(StateTracker.due_s <= at, StateTracker.dirty.is_(True)))
                    .order_by(StateTracker.device_id)
                    .limit(SWEEP_BATCH)
                )
            )
        for device_id in device_ids:
            async with sessions() as session:
                await self._guarded(session, device_id, [], at)
                await session.commit()
        async with sessions() as session:
            active = list(
                await session.scalars(
                    select(Incident)
                    .where(Incident.status.in_(evidence.ACTIVE))
                    .order_by(Incident.id)
                    .with_for_update()
                )
            )
            await evidence.refresh(session, active, at)
            await session.commit()
        return len(device_ids)

    async def sweep_round(
        self, sessions: async_sessionmaker[AsyncSession], now: datetime | None = None
    ) -> int:
        """The periodic job's round (server/periodic.py): :meth:`sweep`, then a batch of the KPI
        state rollups of devices changed outside the writer (or all of them after migration
        0008) and the incident rollups of devices changed by acknowledge/resolve/reopen; reports
        read such devices raw meanwhile. Returns the devices advanced."""
        advanced = await self.sweep(sessions, now)
        async with sessions() as session:
            rebuilt = await refresh_rollups(session, limit=ROLLUP_BATCH)
            rebuilt += await refresh_incident_rollups(session, limit=ROLLUP_BATCH)
            if rebuilt:
                await session.commit()
        return advanced
