"""Customers, sites and device assignment (API and ingest matching), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from server.db.models import AuditEntry, Device, Role
from server.runtime import Runtime
from tests.server.incident_factory import Device as Dev
from tests.server.incident_factory import feed, feed_each, incidents_of, tracker
from tests.support.server import api_client, bearer, create_token, server_settings

V1 = "/api/v1"


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, dict[str, str]]]:
    async with api_client(server_settings(db_url, incidents={"enabled": False})) as (client, runtime):
        yield client, runtime, bearer(await create_token(runtime, "carla", Role.ADMIN))


async def test_create_list_update_customers(api: tuple[httpx.AsyncClient, Runtime, dict[str, str]]) -> None:
    client, runtime, auth = api
    hours = {"days": [0, 1, 2, 3, 4], "start": "07:00", "end": "19:00", "tz": "Europe/Berlin"}
    created = await client.post(
        f"{V1}/customers",
        json={
            "name": "St. Mary Hospital",
            "criticality": 5,
            "contract_hours": hours,
            "cost_per_dispatch": 180,
        },
        headers=auth,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["criticality"], body["contract_hours"], body["cost_per_dispatch"]) == (
        "St. Mary Hospital",
        5,
        hours,
        180.0,
    )
    await client.post(f"{V1}/customers", json={"name": "Acme Print Shop"}, headers=auth)
    page = (await client.get(f"{V1}/customers", headers=auth)).json()
    assert [c["name"] for c in page["items"]] == ["Acme Print Shop", "St. Mary Hospital"]
    assert page["items"][0]["criticality"] == 3  # the default
    assert (await client.get(f"{V1}/customers?q=mary", headers=auth)).json()["total"] == 1

    patched = await client.patch(
        f"{V1}/customers/{body['id']}", json={"criticality": 4, "contract_hours": None}, headers=auth
    )
    assert (patched.json()["criticality"], patched.json()["contract_hours"]) == (4, None)
    duplicate = await client.post(f"{V1}/customers", json={"name": "Acme Print Shop"}, headers=auth)
    assert (duplicate.status_code, duplicate.json()["error"]["field"]) == (409, "name")
    async with runtime.sessions() as session:
        actions = list(
            await session.scalars(select(AuditEntry.action).where(AuditEntry.actor == "user:carla"))
        )
    assert sorted(actions) == ["customer.created", "customer.created", "customer.updated"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "A", "criticality": 7}, "criticality"),
        ({"name": "A", "cost_per_dispatch": -1}, "cost_per_dispatch"),
        ({"name": "A", "contract_hours": {"start": "8am"}}, "contract_hours.start"),
        ({"name": "A", "contract_hours": {"tz": "Mars/Olympus"}}, "contract_hours.tz"),
        ({"name": "A", "colour": "red"}, "colour"),
    ],
)
async def test_customer_errors_name_the_field(
    api: tuple[httpx.AsyncClient, Runtime, dict[str, str]], body: dict[str, object], field: str
) -> None:
    client, _, auth = api
    response = await client.post(f"{V1}/customers", json=body, headers=auth)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field


async def test_sites_and_device_assignment(api: tuple[httpx.AsyncClient, Runtime, dict[str, str]]) -> None:
    client, runtime, auth = api
    await feed(runtime.sessions, tracker(), Dev("asg-1").status(0))
    hospital = (
        await client.post(f"{V1}/customers", json={"name": "Hospital", "criticality": 4}, headers=auth)
    ).json()
    other = (await client.post(f"{V1}/customers", json={"name": "Other"}, headers=auth)).json()
    er = await client.post(
        f"{V1}/customers/{hospital['id']}/sites", json={"name": "ER", "criticality": 5}, headers=auth
    )
    assert er.status_code == 201
    site = er.json()
    assert (site["customer_id"], site["criticality"]) == (hospital["id"], 5)
    sites = (await client.get(f"{V1}/customers/{hospital['id']}/sites", headers=auth)).json()
    assert [s["name"] for s in sites["items"]] == ["ER"]
    again = await client.post(f"{V1}/customers/{hospital['id']}/sites", json={"name": "ER"}, headers=auth)
    assert (again.status_code, again.json()["error"]["field"]) == (409, "name")
    renamed = await client.patch(
        f"{V1}/customers/{hospital['id']}/sites/{site['id']}", json={"criticality": None}, headers=auth
    )
    assert renamed.json()["criticality"] is None

    assigned = await client.patch(
        f"{V1}/devices/asg-1", json={"site_id": site["id"], "criticality": 2}, headers=auth
    )
    assert assigned.status_code == 200, assigned.text
    assert (assigned.json()["customer_id"], assigned.json()["site_id"], assigned.json()["criticality"]) == (
        hospital["id"],
        site["id"],
        2,
    )
    device = (await client.get(f"{V1}/devices/asg-1", headers=auth)).json()
    assert (device["customer_id"], device["site_id"], device["criticality"]) == (
        hospital["id"],
        site["id"],
        2,
    )

    wrong = await client.patch(
        f"{V1}/devices/asg-1", json={"customer_id": other["id"], "site_id": site["id"]}, headers=auth
    )
    assert (wrong.status_code, wrong.json()["error"]["field"]) == (422, "site_id")
    missing = await client.patch(f"{V1}/devices/asg-1", json={"customer_id": 9999}, headers=auth)
    assert (missing.status_code, missing.json()["error"]["field"]) == (422, "customer_id")
    moved = await client.patch(f"{V1}/devices/asg-1", json={"customer_id": other["id"]}, headers=auth)
    assert (moved.json()["customer_id"], moved.json()["site_id"]) == (
        other["id"],
        None,
    )  # the site stayed behind
    retired = await client.patch(
        f"{V1}/devices/asg-1",
        json={"decommissioned_at": "2026-12-31T00:00:00Z", "criticality": None},
        headers=auth,
    )
    assert retired.json()["decommissioned_at"].startswith("2026-12-31")
    assert retired.json()["criticality"] is None
    assert (
        await client.patch(f"{V1}/devices/nope", json={"criticality": 1}, headers=auth)
    ).status_code == 404
    bad = await client.patch(f"{V1}/devices/asg-1", json={"criticality": 0}, headers=auth)
    assert bad.json()["error"]["field"] == "criticality"


async def test_a_device_reporting_a_known_site_name_is_matched_on_first_contact(
    api: tuple[httpx.AsyncClient, Runtime, dict[str, str]],
) -> None:
    client, runtime, auth = api
    clinic = (await client.post(f"{V1}/customers", json={"name": "Clinic"}, headers=auth)).json()
    site = (
        await client.post(f"{V1}/customers/{clinic['id']}/sites", json={"name": "radiology-3"}, headers=auth)
    ).json()
    inc = tracker()
    await feed(runtime.sessions, inc, Dev("site-1").inventory(0, site="radiology-3"))
    await feed(runtime.sessions, inc, Dev("site-2").inventory(0, site="Clinic/unknown-place"))
    async with runtime.sessions() as session:
        one = await session.get(Device, "site-1")
        two = await session.get(Device, "site-2")
        assert one is not None
        assert two is not None
        assert (one.customer_id, one.site_id) == (clinic["id"], site["id"])
        assert (two.customer_id, two.site_id) == (None, None)
    # a site created later picks up devices that already reported its qualified name
    later = (
        await client.post(
            f"{V1}/customers/{clinic['id']}/sites", json={"name": "unknown-place"}, headers=auth
        )
    ).json()
    async with runtime.sessions() as session:
        two = await session.get(Device, "site-2")
        assert two is not None
        assert two.site_id == later["id"]


async def test_an_ambiguous_site_name_is_not_matched(
    api: tuple[httpx.AsyncClient, Runtime, dict[str, str]],
) -> None:
    client, runtime, auth = api
    for name in ("A", "B"):
        customer = (await client.post(f"{V1}/customers", json={"name": name}, headers=auth)).json()
        await client.post(f"{V1}/customers/{customer['id']}/sites", json={"name": "lobby"}, headers=auth)
    await feed(runtime.sessions, tracker(), Dev("amb-1").inventory(0, site="lobby"))
    async with runtime.sessions() as session:
        device = await session.get(Device, "amb-1")
        assert device is not None
        assert device.site_id is None


async def test_raising_a_customers_criticality_reprioritises_open_incidents(
    api: tuple[httpx.AsyncClient, Runtime, dict[str, str]],
) -> None:
    client, runtime, auth = api
    inc = tracker()
    dev = Dev("rp-1")
    await feed_each(runtime.sessions, inc, dev.status(0), dev.raised(100), dev.event(200, "x.y"))
    (incident,) = await incidents_of(runtime.sessions, dev.id)
    assert incident.priority == 2
    customer = (
        await client.post(f"{V1}/customers", json={"name": "ER", "criticality": 3}, headers=auth)
    ).json()
    await client.patch(f"{V1}/devices/rp-1", json={"customer_id": customer["id"]}, headers=auth)
    await client.patch(f"{V1}/customers/{customer['id']}", json={"criticality": 5}, headers=auth)
    (incident,) = await incidents_of(runtime.sessions, dev.id)
    assert incident.priority == 1
