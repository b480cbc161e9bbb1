"""Matching a device's reported site name to a site, on SQLite and PostgreSQL.

Two hospitals each have a "Radiology": a device that reports just "Radiology" must stay
unassigned (listed for an operator with the sites it could mean), never be given to whichever
hospital's site was created first; "<customer>/<site>" is unambiguous; an automatic assignment
starts when the inventory was received, never back-dated to 1970. The defect this reproduces
(issue 13, 6.): in the 30-day hospital simulation six devices were counted under the wrong
customer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from server.customers.service import assignment_history
from server.db.models import Device, Role
from server.db.types import utcnow
from server.runtime import Runtime
from tests.server.incident_factory import Device as Dev
from tests.server.incident_factory import at, feed, tracker
from tests.support.server import V1, api_client, bearer, create_token, server_settings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Hospitals:
    client: httpx.AsyncClient
    runtime: Runtime
    admin: dict[str, str]
    ids: dict[str, int]  # customer name -> id

    async def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        answer = await self.client.post(f"{V1}{path}", json=body, headers=self.admin)
        assert answer.status_code == 201, answer.text
        created: dict[str, object] = answer.json()
        return created

    async def customer(self, name: str) -> int:
        created = await self.post("/customers", {"name": name})
        self.ids[name] = int(str(created["id"]))
        return self.ids[name]

    async def site(self, customer: str, name: str) -> int:
        created = await self.post(f"/customers/{self.ids[customer]}/sites", {"name": name})
        return int(str(created["id"]))

    async def owner(self, device_id: str) -> tuple[int | None, int | None]:
        async with self.runtime.sessions() as session:
            device = await session.get(Device, device_id)
            assert device is not None, device_id
            return device.customer_id, device.site_id

    async def periods(self, device_id: str) -> list[tuple[int | None, int | None, datetime, datetime | None]]:
        async with self.runtime.sessions() as session:
            rows = await assignment_history(session, device_id)
        return [(r.customer_id, r.site_id, r.valid_from, r.valid_to) for r in rows]


@pytest.fixture
async def hospitals(db_url: str) -> AsyncIterator[Hospitals]:
    async with api_client(server_settings(db_url, incidents={"enabled": False})) as (client, runtime):
        admin = bearer(await create_token(runtime, "sites-admin", Role.ADMIN))
        yield Hospitals(client, runtime, admin, {})


async def test_a_site_name_two_customers_share_leaves_the_device_unassigned(
    hospitals: Hospitals, caplog: pytest.LogCaptureFixture
) -> None:
    await hospitals.customer("St Mary Hospital")
    await hospitals.customer("Riverside Clinic")
    await hospitals.site("St Mary Hospital", "Radiology")
    await hospitals.site("Riverside Clinic", "Radiology")
    with caplog.at_level(logging.WARNING, logger="server.customers.service"):
        await feed(hospitals.runtime.sessions, tracker(), Dev("amb-xray-1").inventory(0, site="Radiology"))
    assert await hospitals.owner("amb-xray-1") == (None, None)
    assert await hospitals.periods("amb-xray-1") == []
    [warning] = [r.getMessage() for r in caplog.records if "amb-xray-1" in r.getMessage()]
    assert "'Radiology'" in warning
    assert "2 sites" in warning


async def test_sites_created_after_the_report_do_not_take_a_bare_name(hospitals: Hospitals) -> None:
    """The simulator's order: devices report "Radiology", then the hospitals' sites are entered
    one after the other. The first "Radiology" must not take every device that reported it."""
    inc = tracker()
    await feed(hospitals.runtime.sessions, inc, Dev("early-xray-1").inventory(0, site="Radiology"))
    await hospitals.customer("St Mary Hospital")
    await hospitals.customer("Riverside Clinic")
    await hospitals.site("St Mary Hospital", "Radiology")
    await hospitals.site("Riverside Clinic", "Radiology")
    assert await hospitals.owner("early-xray-1") == (None, None)
    assert await hospitals.periods("early-xray-1") == []


async def test_a_customer_qualified_site_name_assigns_the_right_customer_from_receipt(
    hospitals: Hospitals,
) -> None:
    await hospitals.customer("St Mary Hospital")
    riverside = await hospitals.customer("Riverside Clinic")
    await hospitals.site("St Mary Hospital", "Radiology")
    radiology = await hospitals.site("Riverside Clinic", "Radiology")
    report = Dev("rc-xray-1", delay=3).inventory(60, site="Riverside Clinic/Radiology")
    await feed(hospitals.runtime.sessions, tracker(), report)
    assert report.received_at == at(63)
    assert await hospitals.owner("rc-xray-1") == (riverside, radiology)
    # unassigned until the inventory was received, then the customer: nothing back-dated
    assert await hospitals.periods("rc-xray-1") == [
        (None, None, EPOCH, report.received_at),
        (riverside, radiology, report.received_at, None),
    ]


async def test_a_site_created_after_the_report_matches_a_qualified_name_from_its_creation(
    hospitals: Hospitals,
) -> None:
    riverside = await hospitals.customer("Riverside Clinic")
    await feed(
        hospitals.runtime.sessions, tracker(), Dev("rc-late-1").inventory(0, site="Riverside Clinic/MRI")
    )
    assert await hospitals.owner("rc-late-1") == (None, None)
    created_after = utcnow()
    mri = await hospitals.site("Riverside Clinic", "MRI")
    created_before = utcnow()
    assert await hospitals.owner("rc-late-1") == (riverside, mri)
    [before, after] = await hospitals.periods("rc-late-1")
    assert (before[0], before[1], before[2]) == (None, None, EPOCH)
    assert before[3] == after[2]
    # from the site's creation, not from the device's first contact (nor 1970)
    assert created_after <= after[2] <= created_before
    assert (after[0], after[1], after[3]) == (riverside, mri, None)


async def test_a_bare_name_matches_when_one_site_has_it_or_within_the_devices_customer(
    hospitals: Hospitals,
) -> None:
    st_mary = await hospitals.customer("St Mary Hospital")
    riverside = await hospitals.customer("Riverside Clinic")
    emergency = await hospitals.site("St Mary Hospital", "Emergency")
    await hospitals.site("St Mary Hospital", "Radiology")
    radiology = await hospitals.site("Riverside Clinic", "Radiology")
    inc = tracker()
    await feed(hospitals.runtime.sessions, inc, Dev("sm-er-1").inventory(0, site="Emergency"))
    assert await hospitals.owner("sm-er-1") == (st_mary, emergency)
    # a device an operator already gave its customer: the bare name is read within that customer
    two, three = Dev("rc-xray-2"), Dev("rc-xray-3")
    await feed(hospitals.runtime.sessions, inc, two.status(0))
    patched = await hospitals.client.patch(
        f"{V1}/devices/rc-xray-2", json={"customer_id": riverside}, headers=hospitals.admin
    )
    assert patched.status_code == 200, patched.text
    await feed(hospitals.runtime.sessions, inc, two.inventory(100, site="Radiology"))
    assert await hospitals.owner("rc-xray-2") == (riverside, radiology)
    # …and a qualified name of another customer is refused for it
    await feed(hospitals.runtime.sessions, inc, three.status(0))
    await hospitals.client.patch(
        f"{V1}/devices/rc-xray-3", json={"customer_id": riverside}, headers=hospitals.admin
    )
    await feed(hospitals.runtime.sessions, inc, three.inventory(100, site="St Mary Hospital/Radiology"))
    assert await hospitals.owner("rc-xray-3") == (riverside, None)


async def test_unassigned_devices_are_listed_with_the_sites_they_could_mean(hospitals: Hospitals) -> None:
    await hospitals.customer("St Mary Hospital")
    await hospitals.customer("Riverside Clinic")
    await hospitals.site("St Mary Hospital", "Radiology")
    await hospitals.site("Riverside Clinic", "Radiology")
    inc = tracker()
    await feed(hospitals.runtime.sessions, inc, Dev("un-1").inventory(0, site="Radiology"))
    await feed(hospitals.runtime.sessions, inc, Dev("un-2").inventory(0, site="Cardiology"))
    await feed(hospitals.runtime.sessions, inc, Dev("un-3").status(0))
    await feed(hospitals.runtime.sessions, inc, Dev("ok-1").inventory(0, site="St Mary Hospital/Radiology"))
    answer = await hospitals.client.get(f"{V1}/unassigned-devices", headers=hospitals.admin)
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["total"] == 3
    listed = {item["device_id"]: item for item in page["items"]}
    assert listed["un-1"]["reported_site"] == "Radiology"
    assert listed["un-1"]["reason"] == "ambiguous"
    assert listed["un-1"]["candidates"] == ["Riverside Clinic/Radiology", "St Mary Hospital/Radiology"]
    assert (listed["un-2"]["reason"], listed["un-2"]["candidates"]) == ("unknown", [])
    assert (listed["un-3"]["reason"], listed["un-3"]["reported_site"]) == ("not_reported", None)
    # an operator then assigns it, and it leaves the list
    sites = (
        await hospitals.client.get(
            f"{V1}/customers/{hospitals.ids['Riverside Clinic']}/sites", headers=hospitals.admin
        )
    ).json()
    await hospitals.client.patch(
        f"{V1}/devices/un-1", json={"site_id": sites["items"][0]["id"]}, headers=hospitals.admin
    )
    again = (await hospitals.client.get(f"{V1}/unassigned-devices", headers=hospitals.admin)).json()
    assert {item["device_id"] for item in again["items"]} == {"un-2", "un-3"}


async def test_a_customer_user_never_sees_the_other_hospitals_device(hospitals: Hospitals) -> None:
    st_mary = await hospitals.customer("St Mary Hospital")
    await hospitals.customer("Riverside Clinic")
    inc = tracker()
    # Riverside's x-ray reports the bare name before the sites exist, as in the simulation
    await feed(hospitals.runtime.sessions, inc, Dev("rc-xray-9").inventory(0, site="Radiology"))
    await hospitals.site("St Mary Hospital", "Radiology")
    await hospitals.site("Riverside Clinic", "Radiology")
    await feed(
        hospitals.runtime.sessions, inc, Dev("sm-xray-9").inventory(0, site="St Mary Hospital/Radiology")
    )
    carol = bearer(await create_token(hospitals.runtime, "sm-carol", Role.CUSTOMER, customer=st_mary))
    for path, key in (("/devices", "id"), ("/incidents", "device_id")):
        answer = await hospitals.client.get(f"{V1}{path}", headers=carol)
        assert answer.status_code == 200, answer.text
        assert "rc-xray-9" not in {item[key] for item in answer.json()["items"]}, path
    devices = (await hospitals.client.get(f"{V1}/devices", headers=carol)).json()
    assert [item["id"] for item in devices["items"]] == ["sm-xray-9"]
    hidden = await hospitals.client.get(f"{V1}/devices/rc-xray-9", headers=carol)
    assert hidden.status_code == 404
    assert (await hospitals.client.get(f"{V1}/unassigned-devices", headers=carol)).status_code == 403
