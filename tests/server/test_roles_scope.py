"""Data scope on SQLite and PostgreSQL: a technician reaches only the devices (and their
incidents and commands) of assigned customers — and unassigned devices — and gets a 403 that
says how to get access; a customer sees only its own devices, incidents and KPIs, and anything
else is 404 (it must not learn that another customer's device exists)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from server.db.models import Command, Device, Incident, Role
from server.db.types import utcnow
from server.services import customers
from tests.support.server import V1, api_client, bearer, create_token, server_settings

KPI_PERIOD = {"from": "2026-03-01", "to": "2026-03-08"}


@dataclass
class Fleet:
    client: httpx.AsyncClient
    acme: int
    globex: int
    incidents: dict[str, int]  # device id -> its incident
    tech: dict[str, str]  # technician assigned to acme
    customer: dict[str, str]  # acme's customer user
    ops: dict[str, str]


@pytest.fixture
async def fleet(db_url: str) -> AsyncIterator[Fleet]:
    async with api_client(server_settings(db_url, incidents={"enabled": False})) as (client, runtime):
        now = utcnow()
        async with runtime.sessions() as session:
            acme = (await customers.create_customer(session, name="acme", actor="test")).id
            globex = (await customers.create_customer(session, name="globex", actor="test")).id
            owners = {"acme-1": acme, "globex-1": globex, "loose-1": None}
            for device_id, owner in owners.items():
                session.add(Device(id=device_id, customer_id=owner))
            await session.flush()
            incidents = {}
            for device_id in owners:
                incident = Incident(
                    device_id=device_id,
                    kind="fault",
                    severity="error",
                    effect="down",
                    t_fault=now,
                    t_detect=now,
                )
                session.add(incident)
                await session.flush()
                incidents[device_id] = incident.id
                session.add(
                    Command(
                        id=f"cmd-{device_id}",
                        device_id=device_id,
                        action="diag.ping",
                        args={},
                        issuer="user:someone",
                        issued_at=now,
                        expires_at=now + timedelta(minutes=1),
                        deadline_at=now + timedelta(minutes=1),
                        signed="{}",
                    )
                )
            await session.commit()
        yield Fleet(
            client,
            acme,
            globex,
            incidents,
            bearer(await create_token(runtime, "tina", Role.TECHNICIAN, assign=["acme"])),
            bearer(await create_token(runtime, "carl", Role.CUSTOMER, customer="acme")),
            bearer(await create_token(runtime, "olga", Role.OPS)),
        )


async def ids(fleet: Fleet, path: str, auth: dict[str, str], key: str = "id") -> set[object]:
    answer = await fleet.client.get(f"{V1}{path}", headers=auth)
    assert answer.status_code == 200, answer.text
    return {item[key] for item in answer.json()["items"]}


async def test_listings_are_scoped(fleet: Fleet) -> None:
    assert await ids(fleet, "/devices", fleet.ops) == {"acme-1", "globex-1", "loose-1"}
    assert await ids(fleet, "/devices", fleet.tech) == {"acme-1", "loose-1"}
    assert await ids(fleet, "/devices", fleet.customer) == {"acme-1"}
    assert await ids(fleet, "/incidents", fleet.ops, "device_id") == {"acme-1", "globex-1", "loose-1"}
    assert await ids(fleet, "/incidents", fleet.tech, "device_id") == {"acme-1", "loose-1"}
    assert await ids(fleet, "/incidents", fleet.customer, "device_id") == {"acme-1"}
    # a filter cannot widen the scope
    assert await ids(fleet, f"/incidents?customer={fleet.globex}", fleet.customer, "device_id") == set()
    total = (await fleet.client.get(f"{V1}/devices?limit=1", headers=fleet.customer)).json()["total"]
    assert total == 1


async def test_a_technician_is_refused_outside_assigned_customers(fleet: Fleet) -> None:
    other = fleet.incidents["globex-1"]
    refused = [
        ("GET", "/devices/globex-1", None),
        ("GET", "/devices/globex-1/events", None),
        ("GET", "/devices/globex-1/forecast", None),
        ("GET", "/devices/globex-1/commands", None),
        ("POST", "/devices/globex-1/commands", {"action": "diag.ping"}),
        ("GET", "/commands/cmd-globex-1", None),
        ("GET", f"/incidents/{other}", None),
        ("POST", f"/incidents/{other}/ack", {"note": "mine now"}),
        ("PATCH", "/devices/globex-1", {"criticality": 5}),
    ]
    for method, path, body in refused:
        answer = await fleet.client.request(method, f"{V1}{path}", headers=fleet.tech, json=body)
        assert answer.status_code == 403, (method, path, answer.text)
        assert "not assigned" in answer.json()["error"]["message"], answer.text
    for path in (
        "/devices/acme-1",
        "/devices/loose-1",
        "/commands/cmd-acme-1",
        f"/incidents/{fleet.incidents['acme-1']}",
    ):
        assert (await fleet.client.get(f"{V1}{path}", headers=fleet.tech)).status_code == 200, path
    acked = await fleet.client.post(
        f"{V1}/incidents/{fleet.incidents['acme-1']}/ack", headers=fleet.tech, json={}
    )
    assert acked.status_code == 200, acked.text


async def test_a_customer_is_told_other_devices_do_not_exist(fleet: Fleet) -> None:
    for path in (
        "/devices/globex-1",
        "/devices/loose-1",
        "/devices/globex-1/telemetry",
        "/devices/globex-1/forecast",
        "/devices/globex-1/states",
        f"/incidents/{fleet.incidents['globex-1']}",
    ):
        answer = await fleet.client.get(f"{V1}{path}", headers=fleet.customer)
        assert answer.status_code == 404, (path, answer.text)
    hidden = (await fleet.client.get(f"{V1}/devices/globex-1", headers=fleet.customer)).json()["error"]
    unknown = (await fleet.client.get(f"{V1}/devices/never-seen", headers=fleet.customer)).json()["error"]
    assert hidden["message"] == unknown["message"].replace("never-seen", "globex-1")  # indistinguishable
    for path in ("/devices/acme-1", f"/incidents/{fleet.incidents['acme-1']}", "/devices/acme-1/states"):
        assert (await fleet.client.get(f"{V1}{path}", headers=fleet.customer)).status_code == 200, path
    # no commands, no audit, no rules for a customer
    for path in ("/commands/cmd-acme-1", "/devices/acme-1/commands", "/audit", "/rules"):
        assert (await fleet.client.get(f"{V1}{path}", headers=fleet.customer)).status_code == 403, path


async def test_kpis_are_forced_to_the_callers_customer(fleet: Fleet) -> None:
    kpis = f"{V1}/kpis"
    own = await fleet.client.get(kpis, params=KPI_PERIOD, headers=fleet.customer)
    assert own.status_code == 200, own.text
    assert own.json()["filters"]["customer"] == fleet.acme
    grouped = await fleet.client.get(
        kpis, params={**KPI_PERIOD, "group_by": "customer"}, headers=fleet.customer
    )
    assert {row["group"]["key"] for row in grouped.json()["rows"]} <= {fleet.acme}
    as_csv = await fleet.client.get(
        kpis, params={**KPI_PERIOD, "format": "csv", "group_by": "customer"}, headers=fleet.customer
    )
    assert as_csv.status_code == 200
    assert "globex" not in as_csv.text
    other = await fleet.client.get(
        kpis, params={**KPI_PERIOD, "customer": fleet.globex}, headers=fleet.customer
    )
    assert other.status_code == 404

    tech = await fleet.client.get(kpis, params=KPI_PERIOD, headers=fleet.tech)
    assert tech.status_code == 200
    assert tech.json()["filters"]["customer"] == fleet.acme
    refused = await fleet.client.get(
        kpis, params={**KPI_PERIOD, "customer": fleet.globex}, headers=fleet.tech
    )
    assert refused.status_code == 403
    assert "not assigned" in refused.json()["error"]["message"]

    fleetwide = await fleet.client.get(kpis, params=KPI_PERIOD, headers=fleet.ops)
    assert fleetwide.status_code == 200
    assert "customer" not in fleetwide.json()["filters"]
