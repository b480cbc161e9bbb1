"""The incident endpoints in-process, on SQLite and PostgreSQL: roles, lifecycle, filters,
field-named errors. Incidents are derived by a tracker the test drives (the app's own sweeper
is off), so every time is exact."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from server.db.models import AuditEntry, Role
from server.incidents import IncidentTracker
from server.runtime import Runtime
from tests.server.incident_factory import Device, at, feed_each, secs, tracker
from tests.support.server import api_client, bearer, create_token, server_settings

V1 = "/api/v1"


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    async with api_client(server_settings(db_url, incidents={"enabled": False})) as pair:
        yield pair


@pytest.fixture
async def tokens(api: tuple[httpx.AsyncClient, Runtime]) -> dict[str, dict[str, str]]:
    _, runtime = api
    return {
        role.value: bearer(await create_token(runtime, f"{role.value}-user", role))
        for role in (Role.ADMIN, Role.TECHNICIAN, Role.OPS, Role.PROVISIONING)
    }


async def seed(runtime: Runtime, inc: IncidentTracker | None = None, device_id: str = "api-inc-1") -> str:
    """A device with one open, restored-but-unresolved incident (a person acted on it) ... or not."""
    inc = inc or tracker()
    dev = Device(device_id)
    await feed_each(
        runtime.sessions, inc, dev.status(0), dev.raised(100, "JAM"), dev.event(200, "consumable.low")
    )
    return dev.id


async def first_incident(client: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, object]:
    page = (await client.get(f"{V1}/incidents", headers=auth)).json()
    return page["items"][0]  # type: ignore[no-any-return]


async def test_reading_needs_a_reader_role_and_acting_a_technician(
    api: tuple[httpx.AsyncClient, Runtime], tokens: dict[str, dict[str, str]]
) -> None:
    client, runtime = api
    await seed(runtime)
    assert (await client.get(f"{V1}/incidents")).status_code == 401
    assert (await client.get(f"{V1}/incidents", headers=tokens["provisioning"])).status_code == 403
    listed = await client.get(f"{V1}/incidents", headers=tokens["ops"])
    assert listed.status_code == 200
    incident_id = listed.json()["items"][0]["id"]
    refused = await client.post(f"{V1}/incidents/{incident_id}/ack", headers=tokens["ops"])
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    for role in ("technician", "admin"):
        assert (await client.get(f"{V1}/incidents/{incident_id}", headers=tokens[role])).status_code == 200
    assert (
        await client.post(f"{V1}/customers", json={"name": "X"}, headers=tokens["ops"])
    ).status_code == 403
    assert (await client.get(f"{V1}/customers", headers=tokens["ops"])).status_code == 200


async def test_lifecycle_ack_assign_dispatch_resolve_reopen_close(
    api: tuple[httpx.AsyncClient, Runtime], tokens: dict[str, dict[str, str]]
) -> None:
    client, runtime = api
    await seed(runtime)
    tech = tokens["technician"]
    incident = await first_incident(client, tech)
    url = f"{V1}/incidents/{incident['id']}"
    assert incident["status"] == "open"
    assert secs_of(incident["t_fault"]) == 100

    acked = await client.post(f"{url}/ack", json={"note": "looking"}, headers=tech)
    assert acked.status_code == 200
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["t_ack"] is not None
    assert (await client.post(f"{url}/ack", headers=tech)).status_code == 409

    assigned = await client.post(f"{url}/assign", json={"user": "technician-user"}, headers=tech)
    assert (assigned.json()["assigned_to"], assigned.json()["t_respond"] is not None) == (
        "technician-user",
        True,
    )
    onsite = at(300).isoformat()
    dispatched = await client.post(
        f"{url}/dispatch", json={"engineer": "Erik", "onsite_at": onsite}, headers=tech
    )
    assert dispatched.status_code == 200
    body = dispatched.json()
    assert (body["visits"], secs_of(body["t_onsite"]), body["needs_dispatch"]) == (1, 300, True)

    resolved = await client.post(
        f"{url}/resolve", json={"cause": "torn sheet", "resolution": "removed it"}, headers=tech
    )
    assert resolved.status_code == 200
    body = resolved.json()
    assert (body["status"], body["channel"], body["resolved_by"]) == (
        "resolved",
        "field",
        "user:technician-user",
    )
    assert (body["cause"], body["resolution"]) == ("torn sheet", "removed it")
    assert (
        await client.post(f"{url}/resolve", json={"cause": "x", "resolution": "y"}, headers=tech)
    ).status_code == 409

    reopened = await client.post(f"{url}/reopen", json={"reason": "jams again"}, headers=tech)
    assert (reopened.json()["status"], reopened.json()["reopened"], reopened.json()["channel"]) == (
        "open",
        1,
        None,
    )
    await client.post(
        f"{url}/resolve", json={"channel": "field", "cause": "roller", "resolution": "replaced"}, headers=tech
    )
    closed = await client.post(f"{url}/close", headers=tech)
    assert (closed.json()["status"], closed.json()["t_closed"] is not None) == ("closed", True)

    kinds = [entry["kind"] for entry in closed.json()["timeline"]]
    for kind in (
        "opened",
        "acknowledged",
        "assigned",
        "dispatched",
        "onsite",
        "resolved",
        "reopened",
        "closed",
    ):
        assert kind in kinds
    async with runtime.sessions() as session:
        actions = set(
            await session.scalars(
                select(AuditEntry.action).where(AuditEntry.target == f"incident:{incident['id']}")
            )
        )
    assert actions == {
        "incident.acknowledged",
        "incident.assigned",
        "incident.dispatched",
        "incident.resolved",
        "incident.reopened",
        "incident.closed",
    }


def secs_of(value: object) -> float | None:
    from datetime import datetime  # noqa: PLC0415

    assert isinstance(value, str)
    return secs(datetime.fromisoformat(value))


async def test_errors_name_the_field(
    api: tuple[httpx.AsyncClient, Runtime], tokens: dict[str, dict[str, str]]
) -> None:
    client, runtime = api
    await seed(runtime)
    tech = tokens["technician"]
    url = f"{V1}/incidents/{(await first_incident(client, tech))['id']}"

    async def field_of(response: httpx.Response) -> str:
        assert response.status_code == 422, response.text
        return str(response.json()["error"]["field"])

    assert (
        await field_of(await client.post(f"{url}/resolve", json={"resolution": "x"}, headers=tech)) == "cause"
    )
    bad_channel = {"channel": "magic", "cause": "c", "resolution": "r"}
    assert await field_of(await client.post(f"{url}/resolve", json=bad_channel, headers=tech)) == "channel"
    no_evidence = {"cause": "c", "resolution": "r"}
    assert await field_of(await client.post(f"{url}/resolve", json=no_evidence, headers=tech)) == "channel"
    assert await field_of(await client.post(f"{url}/assign", json={"user": "nobody"}, headers=tech)) == "user"
    future = {"engineer": "E", "onsite_at": "2999-01-01T00:00:00Z"}
    assert await field_of(await client.post(f"{url}/dispatch", json=future, headers=tech)) == "onsite_at"
    assert await field_of(await client.patch(url, json={"priority": 9}, headers=tech)) == "priority"
    assert await field_of(await client.get(f"{V1}/incidents?priority=0", headers=tech)) == "priority"
    assert await field_of(await client.get(f"{V1}/incidents?status=weird", headers=tech)) == "status"
    assert (await client.get(f"{V1}/incidents/999999", headers=tech)).status_code == 404


async def test_list_filters_and_paging(
    api: tuple[httpx.AsyncClient, Runtime], tokens: dict[str, dict[str, str]]
) -> None:
    client, runtime = api
    inc = tracker()
    for n in range(3):
        await seed(runtime, inc, device_id=f"flt-{n}")
    other = Device("flt-x")
    await feed_each(
        runtime.sessions,
        inc,
        other.status(0),
        other.raised(100, "OTHER", effect="degraded"),
        other.event(300, "x.y"),
    )
    ops = tokens["ops"]

    async def total(query: str) -> int:
        response = await client.get(f"{V1}/incidents?{query}", headers=ops)
        assert response.status_code == 200, response.text
        return int(response.json()["total"])

    assert await total("") == 4
    page = (await client.get(f"{V1}/incidents?limit=2&offset=1", headers=ops)).json()
    assert (len(page["items"]), page["total"], page["limit"], page["offset"]) == (2, 4, 2, 1)
    assert await total("fault_code=JAM") == 3
    assert await total("fault_code=OTHER") == 1
    assert await total("device=flt-1") == 1
    assert await total("model=LX-9") == 0  # no inventory was sent
    assert await total("priority=3") == 1  # degraded at criticality 3
    assert await total("open_only=true") == 4
    assert await total("status=resolved") == 0
    assert await total(f"since={at(150).isoformat().replace('+00:00', 'Z')}") == 4
    assert await total(f"until={at(150).isoformat().replace('+00:00', 'Z')}") == 0
    assert await total("kind=offline") == 0

    customer = (
        await client.post(f"{V1}/customers", json={"name": "Clinic"}, headers=tokens["technician"])
    ).json()
    site = (
        await client.post(
            f"{V1}/customers/{customer['id']}/sites", json={"name": "ER"}, headers=tokens["technician"]
        )
    ).json()
    patched = await client.patch(
        f"{V1}/devices/flt-1", json={"site_id": site["id"]}, headers=tokens["technician"]
    )
    assert patched.json()["customer_id"] == customer["id"]
    assert await total(f"customer={customer['id']}") == 1
    assert await total(f"site={site['id']}") == 1


async def test_device_states_and_transient_faults(
    api: tuple[httpx.AsyncClient, Runtime], tokens: dict[str, dict[str, str]]
) -> None:
    client, runtime = api
    inc = tracker()
    dev = Device("st-1")
    await feed_each(
        runtime.sessions,
        inc,
        dev.status(0),
        dev.raised(100),
        dev.cleared(120),
        dev.raised(200),
        dev.cleared(500),
    )
    states = (await client.get(f"{V1}/devices/st-1/states", headers=tokens["ops"])).json()
    assert [(s["state"], secs_of(s["start"])) for s in states] == [
        ("running", 0),
        ("down", 100),
        ("running", 120),
        ("down", 200),
        ("running", 500),
    ]
    since = at(150).isoformat().replace("+00:00", "Z")
    assert (
        len((await client.get(f"{V1}/devices/st-1/states?since={since}", headers=tokens["ops"])).json()) == 3
    )
    transient = (await client.get(f"{V1}/devices/st-1/transient-faults", headers=tokens["ops"])).json()
    assert [(t["code"], secs_of(t["raised_at"])) for t in transient] == [("E1", 100)]
    assert (await client.get(f"{V1}/devices/nope/states", headers=tokens["ops"])).status_code == 404


async def test_a_technicians_command_makes_the_default_channel_remote(
    api: tuple[httpx.AsyncClient, Runtime], tokens: dict[str, dict[str, str]]
) -> None:
    from tests.server.test_incidents import add_command  # noqa: PLC0415

    client, runtime = api
    inc = tracker()
    await seed(runtime, inc, device_id="rm-api")
    await add_command(runtime.sessions, "rm-api", "technician-user", 250, state="failed", finished=251)
    await add_command(runtime.sessions, "rm-api", "technician-user", 260, state="succeeded", finished=262)
    await inc.sweep(runtime.sessions, now=at(270))
    incident = await first_incident(client, tokens["ops"])
    assert (incident["remote_used"], secs_of(incident["t_respond"])) == (True, 250)
    resolved = await client.post(
        f"{V1}/incidents/{incident['id']}/resolve",
        json={"cause": "c", "resolution": "r"},
        headers=tokens["technician"],
    )
    assert resolved.json()["channel"] == "remote"
    commands = [e for e in resolved.json()["timeline"] if e["kind"] == "command"]
    assert [e["actor"] for e in commands] == ["user:technician-user", "user:technician-user"]


async def test_guidance_then_resolve_defaults_to_customer(
    api: tuple[httpx.AsyncClient, Runtime], tokens: dict[str, dict[str, str]]
) -> None:
    client, runtime = api
    await seed(runtime, device_id="gd-1")
    tech = tokens["technician"]
    url = f"{V1}/incidents/{(await first_incident(client, tech))['id']}"
    guided = await client.post(f"{url}/guidance", json={"steps": "open tray 2, pull the sheet"}, headers=tech)
    assert guided.json()["t_respond"] is not None
    resolved = await client.post(
        f"{url}/resolve", json={"cause": "jam", "resolution": "customer cleared it"}, headers=tech
    )
    assert resolved.json()["channel"] == "customer"


async def test_patch_triage_and_external_flags_the_intervals(
    api: tuple[httpx.AsyncClient, Runtime], tokens: dict[str, dict[str, str]]
) -> None:
    client, runtime = api
    await seed(runtime, device_id="ext-1")
    tech = tokens["technician"]
    url = f"{V1}/incidents/{(await first_incident(client, tech))['id']}"
    patched = await client.patch(
        url, json={"needs_dispatch": True, "external": True, "priority": 1}, headers=tech
    )
    body = patched.json()
    assert (body["needs_dispatch"], body["external"], body["priority"]) == (True, True, 1)
    states = (await client.get(f"{V1}/devices/ext-1/states", headers=tech)).json()
    assert [(s["state"], s["external"]) for s in states] == [("running", False), ("down", True)]
    assert (await client.patch(url, json={"symptom": None}, headers=tech)).json()["error"][
        "field"
    ] == "symptom"
