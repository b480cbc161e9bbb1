"""Device assignment history: every assignment or move is a period, so the KPIs can count each
device to the customer and site it had at the time (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from server.customers.service import assignment_history
from server.db.models import Role
from server.runtime import Runtime
from tests.server.incident_factory import Device as Dev
from tests.server.incident_factory import feed, tracker
from tests.support.server import api_client, bearer, create_token, server_settings

V1 = "/api/v1"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, dict[str, str]]]:
    async with api_client(server_settings(db_url, incidents={"enabled": False})) as (client, runtime):
        yield client, runtime, bearer(await create_token(runtime, "hist", Role.ADMIN))


async def periods(runtime: Runtime, device_id: str) -> list[tuple[int | None, int | None, bool, bool]]:
    """(customer, site, starts at the epoch, still open) per period, oldest first."""
    async with runtime.sessions() as session:
        rows = await assignment_history(session, device_id)
    for earlier, later in itertools.pairwise(rows):
        assert earlier.valid_to == later.valid_from, "periods follow each other without a gap"
    return [(r.customer_id, r.site_id, r.valid_from == EPOCH, r.valid_to is None) for r in rows]


async def test_assigning_and_moving_a_device_records_each_period(
    api: tuple[httpx.AsyncClient, Runtime, dict[str, str]],
) -> None:
    client, runtime, auth = api
    await feed(runtime.sessions, tracker(), Dev("hist-1").status(0))
    acme = (await client.post(f"{V1}/customers", json={"name": "Acme"}, headers=auth)).json()
    beta = (await client.post(f"{V1}/customers", json={"name": "Beta"}, headers=auth)).json()
    ward = (
        await client.post(f"{V1}/customers/{beta['id']}/sites", json={"name": "Ward"}, headers=auth)
    ).json()
    assert await periods(runtime, "hist-1") == []  # never assigned: no history yet

    await client.patch(f"{V1}/devices/hist-1", json={"customer_id": acme["id"]}, headers=auth)
    # the time before the first assignment is recorded as unassigned
    assert await periods(runtime, "hist-1") == [(None, None, True, False), (acme["id"], None, False, True)]

    await client.patch(f"{V1}/devices/hist-1", json={"criticality": 4}, headers=auth)  # not a move
    await client.patch(f"{V1}/devices/hist-1", json={"site_id": ward["id"]}, headers=auth)
    assert await periods(runtime, "hist-1") == [
        (None, None, True, False),
        (acme["id"], None, False, False),
        (beta["id"], ward["id"], False, True),
    ]


async def test_site_matching_starts_when_the_inventory_was_received(
    api: tuple[httpx.AsyncClient, Runtime, dict[str, str]],
) -> None:
    """Not back-dated to 1970 (issue 13): before its inventory came, nobody knew whose it was."""
    client, runtime, auth = api
    clinic = (await client.post(f"{V1}/customers", json={"name": "Clinic"}, headers=auth)).json()
    lab = (
        await client.post(f"{V1}/customers/{clinic['id']}/sites", json={"name": "lab-2"}, headers=auth)
    ).json()
    inc = tracker()
    await feed(runtime.sessions, inc, Dev("hist-2").inventory(0, site="lab-2"))
    assert await periods(runtime, "hist-2") == [
        (None, None, True, False),
        (clinic["id"], lab["id"], False, True),
    ]
    # a site created after the device reported its (qualified) name: from the site's creation
    await feed(runtime.sessions, inc, Dev("hist-3").inventory(0, site="Clinic/lab-9"))
    later = (
        await client.post(f"{V1}/customers/{clinic['id']}/sites", json={"name": "lab-9"}, headers=auth)
    ).json()
    assert await periods(runtime, "hist-3") == [
        (None, None, True, False),
        (clinic["id"], later["id"], False, True),
    ]
