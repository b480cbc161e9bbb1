"""Keep the broker's deny list in step with the fleet registry: revoked and retired devices are
denied everything on the broker within seconds, and revocations made with ``fleetcare certs
revoke`` reach the registry.

Why the server does it: a device is retired (``decommissioned_at``) or revoked (``revoked_at``,
``POST /api/v1/devices/{id}/revoke``) in the registry, but Mosquitto knows only its ACL file,
re-read on SIGHUP and applied to live connections at once. So every ``mqtt.access_sync_interval``
seconds the server writes its deny entries (source ``server``, :mod:`certs.acl`) into
``mqtt.broker_acl_file`` and, when they changed, reloads the broker through
``mqtt.broker_pid_file``. This needs the server on the broker's machine (or a shared file); where
it is not, ingest still refuses the device's messages (server/ingest/refusals.py) and the operator
runs ``fleetcare certs revoke`` where the broker runs.

The other way round, identities the PKI denies (source ``certs``: every certificate revoked) are
marked ``revoked_at`` in the registry, with an audit entry, so ingest refuses them too.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from certs import AclChange, DenyEntry, read_denied, reload_broker, update_acl
from server.base import audit
from server.db.models import Device
from server.db.types import utcnow
from server.fleet.devices import get_device
from server.periodic import Periodic

__all__ = ["SOURCE", "AccessSync", "SyncOutcome", "denied_devices", "revoke_device"]

logger = logging.getLogger(__name__)

SOURCE = "server"
SYSTEM_ACTOR = "system:broker-access"


def _stamp(when: datetime) -> datetime:
    return when.replace(microsecond=0)


async def denied_devices(session: AsyncSession) -> list[DenyEntry]:
    """The deny entries the registry vouches for: revoked devices, then retired ones."""
    rows = await session.execute(
        select(Device.id, Device.revoked_at, Device.decommissioned_at).where(
            or_(Device.revoked_at.is_not(None), Device.decommissioned_at.is_not(None))
        )
    )
    entries = []
    for device_id, revoked_at, decommissioned_at in rows:
        if revoked_at is not None:
            entries.append(DenyEntry(device_id, "revoked", SOURCE, _stamp(revoked_at)))
        elif decommissioned_at is not None:
            entries.append(DenyEntry(device_id, "retired", SOURCE, _stamp(decommissioned_at)))
    return entries


async def revoke_device(
    session: AsyncSession, device_id: str, *, actor: str, reason: str | None = None
) -> Device:
    """Mark a device revoked (idempotent: the first time stays), audited, committed. Ingest
    refuses it within about a second, the broker denies it at the next access sync."""
    device = await get_device(session, device_id)
    if device.revoked_at is None:
        device.revoked_at = utcnow()
        audit.record(
            session,
            actor=actor,
            action="device.revoked",
            target=f"device:{device_id}",
            detail={"reason": reason} if reason else {},
        )
        await session.commit()
    return device


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    change: AclChange
    reloaded: bool | None  # None: nothing changed, no reload needed
    adopted: tuple[str, ...]  # devices newly marked revoked from the PKI's deny entries


class AccessSync:
    """One job: registry → ACL (and broker reload), PKI deny entries → registry."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        acl_file: Path,
        pid_file: Path | None,
        *,
        interval: float,
    ) -> None:
        self.sessions = sessions
        self.acl_file = acl_file
        self.pid_file = pid_file
        self.interval = interval

    async def sync_once(self) -> SyncOutcome:
        async with self.sessions() as session:
            adopted = await self._adopt_pki_revocations(session)
            entries = await denied_devices(session)
        change = await asyncio.to_thread(update_acl, self.acl_file, source=SOURCE, denied=entries)
        reloaded: bool | None = None
        if change.written:
            outcome = await asyncio.to_thread(reload_broker, self.pid_file)
            reloaded = outcome.reloaded
            log = logger.info if outcome.reloaded else logger.warning
            log(
                "broker ACL %s: denied %s, no longer denied %s; %s",
                self.acl_file,
                sorted(change.added) or "-",
                sorted(change.removed) or "-",
                outcome.detail,
            )
        return SyncOutcome(change, reloaded, adopted)

    async def _adopt_pki_revocations(self, session: AsyncSession) -> tuple[str, ...]:
        pki_denied = [e for e in await asyncio.to_thread(read_denied, self.acl_file) if e.source != SOURCE]
        if not pki_denied:
            return ()
        ids = {e.identity: e for e in pki_denied if e.reason == "revoked"}
        rows = await session.scalars(select(Device).where(Device.id.in_(ids), Device.revoked_at.is_(None)))
        adopted = []
        for device in rows:
            device.revoked_at = ids[device.id].at
            audit.record(
                session,
                actor=SYSTEM_ACTOR,
                action="device.revoked",
                target=f"device:{device.id}",
                detail={"source": "certs", "revoked_at": ids[device.id].at.isoformat()},
            )
            adopted.append(device.id)
        if adopted:
            await session.commit()
            logger.info("marked revoked from the PKI's revocation list: %s", ", ".join(sorted(adopted)))
        return tuple(sorted(adopted))

    def job(self) -> Periodic:
        """Sync every ``interval`` s; a failed round is logged and retried at the next one."""

        async def sync_round(_now: datetime | None) -> SyncOutcome:
            return await self.sync_once()

        return Periodic("server.broker_access", self.interval, sync_round, timeout=max(self.interval, 10.0))
