"""The incident queue (issue 15, item 2): filters that filter (an unknown value is a 422 naming
the field), the service-level clock with breaches marked, CSV that is CSV with exactly the rows
the filters select across pages, bulk acknowledge / assign through the incident service (each
audited, the unreachable skipped and named), and a landing page every role may open."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select

from server.base import users
from server.db.models import AuditEntry, Incident, Role
from server.db.types import utcnow
from server.runtime import Runtime
from tests.support.server import V1, bearer, create_token
from tests.web.seed import PASSWORD
from tests.web.support import Console, csrf_of, sign_in, token_for


async def queued_incident(runtime: Runtime, device_id: str, *, priority: int, age: timedelta) -> int:
    """An open incident with fault code Q-TEST detected ``age`` ago (the tests filter on it)."""
    detected = utcnow() - age
    async with runtime.sessions() as session:
        incident = Incident(
            device_id=device_id,
            kind="fault",
            severity="error",
            effect="down",
            fault_code="Q-TEST",
            priority=priority,
            t_fault=detected,
            t_detect=detected,
        )
        session.add(incident)
        await session.commit()
        return incident.id


def _listed(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-incident="(\d+)"', html)]


def _mine(console: Console) -> list[str]:
    return console.seeded.devices[console.seeded.customers[0]]


async def test_queue_filters_marks_breaches_and_refuses_unknown_values(console: Console) -> None:
    late = await queued_incident(console.runtime, _mine(console)[0], priority=1, age=timedelta(hours=2))
    fresh = await queued_incident(console.runtime, _mine(console)[1], priority=4, age=timedelta(minutes=1))
    await sign_in(console.client, "tina")
    page = await console.client.get("/incidents", params={"fault": "Q-TEST"})
    assert page.status_code == 200, page.text[:300]
    assert _listed(page.text) == [late, fresh]  # next deadline first: P1 overdue before P4
    row = re.search(rf'<tr data-incident="{late}"[^>]*>', page.text)
    assert row
    assert 'data-breached="true"' in row.group(0)
    assert 'class="breached"' in row.group(0)
    assert "acknowledge overdue by" in page.text
    breached = await console.client.get("/incidents", params={"fault": "Q-TEST", "sla": "breached"})
    assert _listed(breached.text) == [late]
    p4 = await console.client.get("/incidents", params={"fault": "Q-TEST", "priority": "4"})
    assert _listed(p4.text) == [fresh]
    older = await console.client.get("/incidents", params={"fault": "Q-TEST", "age": "1h"})
    assert _listed(older.text) == [late]
    for field, value in (("state", "down"), ("age", "3d"), ("priority", "9"), ("sla", "late")):
        refused = await console.client.get("/incidents", params={field: value})
        assert refused.status_code == 422, (field, refused.status_code)
        assert field in refused.text
        assert repr(value) in refused.text.replace("&#39;", "'")


async def test_queue_csv_is_csv_with_every_row_the_filters_select(console: Console) -> None:
    await sign_in(console.client, "olga")
    query = {"state": "all"}
    pages, page = [], 1
    while True:
        html = (await console.client.get("/incidents", params={**query, "page": str(page)})).text
        found = _listed(html)
        if not found:
            break
        pages.extend(found)
        page += 1
    assert len(pages) > 50, "the seed should need more than one page"
    export = await console.client.get("/incidents.csv", params=query)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(export.text)))
    assert rows[0][:3] == ["id", "status", "priority"]
    assert [int(r[0]) for r in rows[1:]] == pages
    statuses = Counter(r[1] for r in rows[1:])
    common, count = statuses.most_common(1)[0]
    narrowed = list(
        csv.reader(io.StringIO((await console.client.get(f"/incidents.csv?state={common}")).text))
    )
    assert len(narrowed) - 1 == count
    assert {r[1] for r in narrowed[1:]} == {common}
    assert (await console.client.get("/incidents.csv?state=down")).status_code == 422
    asked = await console.client.get("/incidents", params={**query, "format": "csv"})
    assert asked.headers["content-type"].startswith("text/csv")  # not the page, not JSON
    assert asked.text == export.text
    typo = await console.client.get("/incidents?status=open")  # the API's name, not the page's
    assert typo.status_code == 422
    assert "status: unknown parameter" in typo.text


async def test_bulk_acknowledge_and_assign_go_through_the_incident_service(console: Console) -> None:
    first, second = _mine(console)[:2]
    a = await queued_incident(console.runtime, first, priority=2, age=timedelta(minutes=5))
    b = await queued_incident(console.runtime, second, priority=2, age=timedelta(minutes=5))
    other = console.seeded.devices[console.seeded.customers[1]][0]
    c = await queued_incident(console.runtime, other, priority=2, age=timedelta(minutes=5))
    csrf = await sign_in(console.client, "ada")
    token = await token_for(console, "ada")
    acked = await console.client.post(
        "/incidents/bulk", data={"csrf": csrf, "action": "ack", f"sel.{a}": "1", "back": "fault=Q-TEST"}
    )
    assert acked.status_code == 200, acked.text[:300]
    assert "Acknowledged:" in acked.text
    again = await console.client.post(
        "/incidents/bulk", data={"csrf": csrf, "action": "ack", f"sel.{a}": "1", f"sel.{b}": "1"}
    )
    assert f'data-skipped="{a}"' in again.text  # already acknowledged: named, not an error page
    for incident in (a, b):
        body = (await console.client.get(f"{V1}/incidents/{incident}", headers=bearer(token))).json()
        assert body["status"] == "acknowledged"
    # tina works for the first customer only: the incident of the second is skipped, not assigned
    assigned = await console.client.post(
        "/incidents/bulk",
        data={"csrf": csrf, "action": "assign", "user": "tina", f"sel.{a}": "1", f"sel.{c}": "1"},
    )
    assert f'data-skipped="{c}"' in assigned.text
    assert "may not work on" in assigned.text
    body_a = (await console.client.get(f"{V1}/incidents/{a}", headers=bearer(token))).json()
    body_c = (await console.client.get(f"{V1}/incidents/{c}", headers=bearer(token))).json()
    assert body_a["assigned_to"] == "tina"
    assert body_c["assigned_to"] is None
    async with console.runtime.sessions() as session:
        audited = await session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.target == f"incident:{a}")
        )
    assert audited
    assert audited >= 2
    forged = await console.client.post("/incidents/bulk", data={"action": "ack", f"sel.{b}": "1"})
    assert forged.status_code == 403
    none = await console.client.post("/incidents/bulk", data={"csrf": csrf, "action": "ack"})
    assert none.status_code == 422
    assert "selection" in none.text


async def test_customer_reads_the_queue_but_cannot_act(console: Console) -> None:
    mine = await queued_incident(console.runtime, _mine(console)[0], priority=3, age=timedelta(minutes=5))
    theirs = await queued_incident(
        console.runtime,
        console.seeded.devices[console.seeded.customers[1]][0],
        priority=3,
        age=timedelta(minutes=5),
    )
    csrf = await sign_in(console.client, "carl")
    page = await console.client.get("/incidents", params={"fault": "Q-TEST"})
    assert _listed(page.text) == [mine]
    assert str(theirs) not in _listed(page.text)
    assert 'id="bulk-ack"' not in page.text
    refused = await console.client.post(
        "/incidents/bulk", data={"csrf": csrf, "action": "ack", f"sel.{mine}": "1"}
    )
    assert refused.status_code == 403


async def _landing(console: Console, name: str) -> str:
    form = await console.client.get("/login")
    answer = await console.client.post(
        "/login", data={"csrf": csrf_of(form.text), "username": name, "password": PASSWORD}
    )
    assert answer.status_code == 303, answer.text[:300]
    return str(answer.headers["location"])


async def test_every_role_lands_on_a_page_it_may_open(console: Console) -> None:
    await create_token(console.runtime, "newbie", Role.TECHNICIAN, password=PASSWORD)  # no customer yet
    for name in ("ada", "olga", "tina", "carl", "newbie"):
        console.client.cookies.clear()
        target = await _landing(console, name)
        landed = await console.client.get(target)
        assert landed.status_code == 200, (name, target, landed.text[:200])
        nav = re.findall(r'<a href="([^"]+)" data-nav="([a-z]+)"', landed.text)
        assert nav, name
        assert nav[0][0] == target, (name, nav)
        for href, key in nav:  # every link of the navigation opens
            assert (await console.client.get(href)).status_code == 200, (name, key, href)
    assert target == "/incidents"  # the unassigned technician: no dashboard to show yet
    async with console.runtime.sessions() as session:
        assert (await users.get_user(session, "newbie")).role == Role.TECHNICIAN.value
