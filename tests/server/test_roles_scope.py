"""Data scope on SQLite and PostgreSQL: a technician reaches only the devices (and their
incidents and commands) of assigned customers — and unassigned devices — and gets a 403 that
says how to get access; a customer sees only its own devices, incidents and KPIs, and anything
else is 404 (it must not learn that another customer's device exists).

Customers, sites, rules and rule alerts are scoped the same way (issue 13: a technician saw
them all): ``SCOPED_READS`` gives, per route, what each of five callers — admin, ops, a
technician assigned to acme, a technician assigned to nobody, acme's customer user — gets, and
``test_scoped_writes_are_refused_outside_the_scope`` does the same for the writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import routing

from server import customers
from server.app import create_app
from server.db.models import Command, Device, Incident, Role, Rule, RuleAlert
from server.db.types import utcnow
from tests.support.databases import sqlite_url
from tests.support.server import V1, api_client, bearer, create_token, server_settings

KPI_PERIOD = {"from": "2026-03-01", "to": "2026-03-08"}
MODELS = {"acme-1": "AC-1", "globex-1": "GX-1", "loose-1": "LS-1"}


@dataclass
class Fleet:
    client: httpx.AsyncClient
    acme: int
    globex: int
    incidents: dict[str, int]  # device id -> its incident
    tech: dict[str, str]  # technician assigned to acme
    customer: dict[str, str]  # acme's customer user
    ops: dict[str, str]
    admin: dict[str, str]
    loner: dict[str, str]  # technician assigned to no customer
    sites: dict[str, int]  # customer name -> its site "<name>-ward"
    rules: dict[str, int]  # "every" (every model) and the model of each device -> rule id

    def callers(self) -> dict[str, dict[str, str]]:
        return {
            "admin": self.admin,
            "ops": self.ops,
            "tech-acme": self.tech,
            "tech-none": self.loner,
            "customer": self.customer,
        }


@pytest.fixture
async def fleet(db_url: str) -> AsyncIterator[Fleet]:
    async with api_client(server_settings(db_url, incidents={"enabled": False})) as (client, runtime):
        now = utcnow()
        async with runtime.sessions() as session:
            acme = (await customers.create_customer(session, name="acme", actor="test")).id
            globex = (await customers.create_customer(session, name="globex", actor="test")).id
            owners = {"acme-1": acme, "globex-1": globex, "loose-1": None}
            for device_id, owner in owners.items():  # each its own model: "acme-1" is an "AC-1"
                session.add(Device(id=device_id, customer_id=owner, model=MODELS[device_id]))
            await session.flush()
            sites = {}
            for name, owner in (("acme", acme), ("globex", globex)):
                site = await customers.create_site(session, owner, name=f"{name}-ward", actor="test")
                sites[name] = site.id
            rules = {}
            for key, model in (("every", None), *((m, m) for m in MODELS.values())):
                rule = Rule(name=f"rule-{key}", metric="x.temp", op=">", value=1.0, model=model)
                session.add(rule)
                await session.flush()
                rules[key] = rule.id
            for device_id in owners:
                session.add(
                    RuleAlert(
                        rule_id=rules["every"], device_id=device_id, started_at=now, raised_at=now, value=2.0
                    )
                )
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
            bearer(await create_token(runtime, "ada", Role.ADMIN)),
            bearer(await create_token(runtime, "ulla", Role.TECHNICIAN)),
            sites,
            rules,
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


# -- customers, sites, rules and alerts ----------------------------------------------------------

Seen = frozenset[str] | int  # the items listed (200), or the status of a refusal / a single read
ALL_CALLERS = ("admin", "ops", "tech-acme", "tech-none", "customer")


def each(expected: Seen, *, except_: dict[str, Seen] | None = None) -> dict[str, Seen]:
    return {caller: (except_ or {}).get(caller, expected) for caller in ALL_CALLERS}


def names(*items: str) -> frozenset[str]:
    return frozenset(items)


NOBODY_ELSE = {"tech-none": 403, "customer": 403}
ACME_ONLY = {"tech-acme": 200, **NOBODY_ELSE}
GLOBEX_HIDDEN = {"tech-acme": 403, **NOBODY_ELSE}

# (path with {acme}, {globex}, {acme_site}, {globex_site}, {rule_<key>}), the field listed, per caller
SCOPED_READS: dict[str, tuple[str | None, dict[str, Seen]]] = {
    "/customers": (
        "name",
        each(
            names("acme", "globex"),
            except_={"tech-acme": names("acme"), "tech-none": names(), "customer": 403},
        ),
    ),
    "/customers/{acme}": (None, each(200, except_=NOBODY_ELSE)),
    "/customers/{globex}": (None, each(200, except_=GLOBEX_HIDDEN)),
    "/customers/{acme}/sites": ("name", each(names("acme-ward"), except_=NOBODY_ELSE)),
    "/customers/{globex}/sites": ("name", each(names("globex-ward"), except_=GLOBEX_HIDDEN)),
    "/rules": (
        "name",
        each(
            names("rule-every", "rule-AC-1", "rule-GX-1", "rule-LS-1"),
            except_={
                "tech-acme": names("rule-every", "rule-AC-1", "rule-LS-1"),
                "tech-none": names("rule-every", "rule-LS-1"),
                "customer": 403,
            },
        ),
    ),
    "/rules/{rule_every}": (None, each(200, except_={"customer": 403})),
    "/rules/{rule_AC-1}": (None, each(200, except_=NOBODY_ELSE)),
    "/rules/{rule_GX-1}": (None, each(200, except_=GLOBEX_HIDDEN)),
    "/rules/{rule_LS-1}": (None, each(200, except_={"customer": 403})),
    "/rules/alerts": (
        "device_id",
        each(
            names("acme-1", "globex-1", "loose-1"),
            except_={"tech-acme": names("acme-1", "loose-1"), "tech-none": names("loose-1"), "customer": 403},
        ),
    ),
    "/rules/alerts?device=globex-1": (
        "device_id",
        each(names("globex-1"), except_={"tech-acme": names(), "tech-none": names(), "customer": 403}),
    ),
    "/rules/alerts?rule={rule_every}": (
        "device_id",
        each(
            names("acme-1", "globex-1", "loose-1"),
            except_={"tech-acme": names("acme-1", "loose-1"), "tech-none": names("loose-1"), "customer": 403},
        ),
    ),
    "/unassigned-devices": (  # no device has a site here
        "device_id",
        each(
            names("acme-1", "globex-1", "loose-1"),
            except_={"tech-acme": names("acme-1", "loose-1"), "tech-none": names("loose-1"), "customer": 403},
        ),
    ),
}


def fill(fleet: Fleet, path: str) -> str:
    values = {
        "acme": fleet.acme,
        "globex": fleet.globex,
        "acme_site": fleet.sites["acme"],
        "globex_site": fleet.sites["globex"],
        **{f"rule_{key}": rule_id for key, rule_id in fleet.rules.items()},
    }
    for key, value in values.items():
        path = path.replace(f"{{{key}}}", str(value))
    return path


async def test_customers_sites_rules_and_alerts_are_read_within_the_scope(fleet: Fleet) -> None:
    wrong: list[str] = []
    for path, (field, expected) in SCOPED_READS.items():
        for caller, auth in fleet.callers().items():
            answer = await fleet.client.get(f"{V1}{fill(fleet, path)}", headers=auth)
            want = expected[caller]
            if isinstance(want, int):
                if answer.status_code != want:
                    wrong.append(
                        f"GET {path} as {caller}: {answer.status_code}, want {want}: {answer.text[:100]}"
                    )
                elif want == 403 and caller.startswith("tech") and "not assigned" not in answer.text:
                    wrong.append(f"GET {path} as {caller}: the 403 does not say why: {answer.text[:100]}")
                continue
            if answer.status_code != 200:
                wrong.append(f"GET {path} as {caller}: {answer.status_code}, want 200: {answer.text[:100]}")
                continue
            assert field is not None
            page = answer.json()
            seen = {item[field] for item in page["items"]}
            if seen != want or page["total"] != len(want):
                wrong.append(
                    f"GET {path} as {caller}: {sorted(seen)} (total {page['total']}), want {sorted(want)}"
                )
    assert not wrong, "\n".join(wrong)


def test_every_customer_site_and_rule_read_is_in_the_scope_table(tmp_path: Path) -> None:
    """A new GET route under /customers, /rules or /unassigned-devices needs a row above."""
    app = create_app(server_settings(sqlite_url(tmp_path / "routes.db"), incidents={"enabled": False}))
    reads = {
        route.path.removeprefix(V1)
        for route in routing.iter_route_contexts(app.routes)
        if route.path.startswith(V1) and "GET" in (route.methods or set())
    }
    scoped = {p for p in reads if p.split("/")[1] in {"customers", "rules", "unassigned-devices"}}
    covered = {
        path.split("?")[0].replace("{acme}", "{customer_id}").replace("{globex}", "{customer_id}")
        for path in SCOPED_READS
    }
    covered = {"/rules/{rule_id}" if p.startswith("/rules/{rule_") else p for p in covered}
    assert scoped <= covered, f"add these routes to SCOPED_READS: {sorted(scoped - covered)}"


async def test_scoped_writes_are_refused_outside_the_scope(fleet: Fleet) -> None:
    """A technician of acme cannot change globex, its sites, the rules that judge globex's
    devices, or give acme's device to globex; the same calls within the scope succeed."""
    refused = [
        ("PATCH", "/customers/{globex}", {"criticality": 5}),
        ("POST", "/customers/{globex}/sites", {"name": "annex"}),
        ("PATCH", "/customers/{globex}/sites/{globex_site}", {"criticality": 5}),
        ("PATCH", "/rules/{rule_GX-1}", {"value": 5}),
        ("DELETE", "/rules/{rule_GX-1}", None),
        ("PATCH", "/rules/{rule_every}", {"value": 5}),  # it judges globex-1 too
        ("DELETE", "/rules/{rule_every}", None),
        ("PATCH", "/rules/{rule_AC-1}", {"model": "GX-1"}),  # would judge globex-1
        ("POST", "/rules", {"name": "all", "metric": "x.temp", "op": ">", "value": 1}),
        ("POST", "/rules", {"name": "gx", "metric": "x.temp", "op": ">", "value": 1, "model": "GX-1"}),
        ("PATCH", "/devices/acme-1", {"customer_id": "{globex}"}),
        ("PATCH", "/devices/loose-1", {"site_id": "{globex_site}"}),
    ]
    for caller in ("tech-acme", "tech-none"):
        for method, path, body in refused:
            filled = None if body is None else {k: _value(fleet, v) for k, v in body.items()}
            answer = await fleet.client.request(
                method, f"{V1}{fill(fleet, path)}", headers=fleet.callers()[caller], json=filled
            )
            assert answer.status_code == 403, (caller, method, path, answer.text)
            assert "not assigned" in answer.json()["error"]["message"], answer.text
    # …nothing changed: every rule is still there, acme-1 still acme's
    assert await ids(fleet, "/rules", fleet.admin, "name") == {f"rule-{key}" for key in fleet.rules}
    assert (await fleet.client.get(f"{V1}/devices/acme-1", headers=fleet.admin)).json()[
        "customer_id"
    ] == fleet.acme

    allowed = [
        ("PATCH", "/customers/{acme}", {"criticality": 4}, 200),
        ("POST", "/customers/{acme}/sites", {"name": "annex"}, 201),
        ("PATCH", "/customers/{acme}/sites/{acme_site}", {"criticality": 4}, 200),
        ("PATCH", "/rules/{rule_AC-1}", {"value": 5}, 200),
        ("POST", "/rules", {"name": "ac", "metric": "x.temp", "op": ">", "value": 1, "model": "AC-1"}, 201),
        ("POST", "/rules", {"name": "new", "metric": "x.temp", "op": ">", "value": 1, "model": "NEW-1"}, 201),
        ("PATCH", "/devices/loose-1", {"site_id": "{acme_site}"}, 200),
        ("DELETE", "/rules/{rule_AC-1}", None, 204),
    ]
    for method, path, body, status in allowed:
        filled = None if body is None else {k: _value(fleet, v) for k, v in body.items()}
        answer = await fleet.client.request(
            method, f"{V1}{fill(fleet, path)}", headers=fleet.tech, json=filled
        )
        assert answer.status_code == status, (method, path, answer.text)
    # a rule for a model no other customer has stays visible to the technician who made it
    assert {"ac", "new"} <= await ids(fleet, "/rules", fleet.tech, "name")
    # a customer a technician creates is theirs: listed, readable, and its sites writable
    created = await fleet.client.post(f"{V1}/customers", json={"name": "initech"}, headers=fleet.tech)
    assert created.status_code == 201, created.text
    assert await ids(fleet, "/customers", fleet.tech, "name") == {"acme", "initech"}
    site = await fleet.client.post(
        f"{V1}/customers/{created.json()['id']}/sites", json={"name": "hq"}, headers=fleet.tech
    )
    assert site.status_code == 201, site.text
    assert await ids(fleet, "/customers", fleet.loner, "name") == set()


def _value(fleet: Fleet, value: object) -> object:
    """A body value: "{globex}"-style placeholders become the ids."""
    return int(fill(fleet, value)) if isinstance(value, str) and value.startswith("{") else value
