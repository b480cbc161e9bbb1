"""A small fleet with an incident history (the KPI generator) and a user per role, for the
console's tests and benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from server.db.models import Device, Role
from server.db.types import utcnow
from server.kpi.generate import FleetShape, generate
from server.kpi.records import insert_dataset
from server.runtime import Runtime
from tests.support.server import create_token

__all__ = ["PASSWORD", "PERIOD", "Seeded", "seed"]

PASSWORD = "correct horse battery"
PERIOD = {"from": "2026-01-05", "to": "2026-03-02"}  # whole weeks inside the generated history
FIRMWARE = ("4.2.1", "4.2.1", "4.3.0", "4.1.7")


@dataclass(frozen=True)
class Seeded:
    customers: list[int]
    devices: dict[int, list[str]]  # customer id -> its device ids


async def seed(runtime: Runtime, *, devices: int = 40) -> Seeded:
    """The generated history, then users ``olga`` (ops), ``tina`` (technician of the first
    customer), ``carl`` (customer user of the first customer), ``ada`` (admin)."""
    ds = generate(FleetShape(devices=devices, days=90, seed=3))
    now = utcnow()
    async with runtime.sessions() as session:
        await insert_dataset(session, ds)
        for n, record in enumerate(ds.devices):  # the facts an agent reports, for the pages
            device = await session.get(Device, record.id)
            assert device is not None
            device.serial = f"{record.model or 'DEV'}-{24_0000 + 37 * n:06d}"
            device.firmware = FIRMWARE[n % len(FIRMWARE)]
            device.inventory = {
                "agent": {"version": "1.4.2", "plugins": ["system", "printer"]},
                "hardware": {"model": record.model, "serial": device.serial, "firmware": device.firmware},
                "os": {"name": "Debian GNU/Linux", "version": "12"},
            }
            if n % 3 == 0:  # every third device online and running: the live status
                device.online, device.state = True, "running"
                device.last_seen = now - timedelta(seconds=5 + 7 * n)
            else:
                device.last_seen = now - timedelta(hours=2 + 5 * n)
        await session.commit()
    ids = sorted(c.id for c in ds.customers)
    owned: dict[int, list[str]] = {c: [] for c in ids}
    for record in ds.devices:
        if record.customer_id is not None:
            owned[record.customer_id].append(record.id)
    await create_token(runtime, "olga", Role.OPS, password=PASSWORD)
    await create_token(runtime, "tina", Role.TECHNICIAN, assign=[ids[0]], password=PASSWORD)
    await create_token(runtime, "carl", Role.CUSTOMER, customer=ids[0], password=PASSWORD)
    await create_token(runtime, "ada", Role.ADMIN, password=PASSWORD)
    return Seeded(ids, owned)
