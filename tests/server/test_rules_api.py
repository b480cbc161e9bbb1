"""The rules API in-process (roles, validation, alerts, the periodic task), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import protocol
from server.db.models import Role
from server.ingest import BatchWriter
from server.maintenance.rules import evaluate_rules
from server.runtime import Runtime
from tests.server import factory as f
from tests.support.server import api_client, create_token, server_settings
from tests.support.waiting import eventually

V1 = "/api/v1"
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TEMP = "printer.fuser.temperature.celsius"
RULE = {"name": "fuser hot", "metric": TEMP, "op": ">", "value": 230, "duration_s": 600}

Api = tuple[httpx.AsyncClient, Runtime, dict[Role, dict[str, str]]]


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    settings = server_settings(db_url, maintenance={"rule_interval": 0})  # passes run by hand
    async with api_client(settings) as (client, runtime):
        headers = {
            role: {"Authorization": f"Bearer {await create_token(runtime, role.value, role)}"}
            for role in Role
        }
        yield client, runtime, headers


async def send_temperatures(
    runtime: Runtime, device_id: str, seq: int, points: list[tuple[int, float]]
) -> None:
    """Through the ingest writer: (minutes after T0, °C) readings in one telemetry message."""
    samples = [protocol.Sample(metric=TEMP, value=value, ts=T0 + timedelta(minutes=m)) for m, value in points]
    message = protocol.Telemetry(device_id=device_id, seq=seq, ts=T0, samples=samples)
    await BatchWriter(runtime.sessions).write([f.decoded(message)])


async def test_technician_writes_ops_reads_provisioning_is_refused(api: Api) -> None:
    client, _, h = api
    created = await client.post(f"{V1}/rules", json=RULE, headers=h[Role.TECHNICIAN])
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule | {"id": 0, "created_at": ""} == {
        **RULE,
        "id": 0,
        "created_at": "",
        "value": 230.0,
        "duration_s": 600.0,
        "severity": "warning",
        "model": None,
        "enabled": True,
    }
    url = f"{V1}/rules/{rule['id']}"
    for role in (Role.OPS, Role.TECHNICIAN, Role.ADMIN):
        assert (await client.get(url, headers=h[role])).status_code == 200
        listed = await client.get(f"{V1}/rules", headers=h[role])
        assert listed.json()["total"] == 1
        assert (await client.get(f"{V1}/rules/alerts", headers=h[role])).status_code == 200
    ops = h[Role.OPS]
    assert (await client.post(f"{V1}/rules", json=RULE | {"name": "x"}, headers=ops)).status_code == 403
    assert (await client.patch(url, json={"value": 1}, headers=ops)).status_code == 403
    assert (await client.delete(url, headers=ops)).status_code == 403
    refused = await client.get(f"{V1}/rules", headers=h[Role.PROVISIONING])
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert (await client.get(f"{V1}/rules")).status_code == 401

    patched = await client.patch(url, json={"value": 240, "model": "LX-9"}, headers=h[Role.ADMIN])
    assert patched.status_code == 200
    assert (patched.json()["value"], patched.json()["model"]) == (240.0, "LX-9")
    cleared = await client.patch(url, json={"model": None}, headers=h[Role.TECHNICIAN])
    assert cleared.json()["model"] is None
    assert (await client.delete(url, headers=h[Role.TECHNICIAN])).status_code == 204
    assert (await client.get(url, headers=ops)).status_code == 404

    audit = await client.get(f"{V1}/audit", params={"target": f"rule:{rule['id']}"}, headers=ops)
    assert [entry["action"] for entry in audit.json()["items"]] == [
        "rule.deleted",
        "rule.updated",
        "rule.updated",
        "rule.created",
    ]
    assert audit.json()["items"][-1]["actor"] == "user:technician"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (RULE | {"op": "=="}, "op"),
        (RULE | {"op": "gt"}, "op"),
        ({k: v for k, v in RULE.items() if k != "metric"}, "metric"),
        (RULE | {"metric": "Bad Metric"}, "metric"),
        (RULE | {"value": "hot"}, "value"),
        (RULE | {"duration_s": -1}, "duration_s"),
        (RULE | {"severity": "urgent"}, "severity"),
        (RULE | {"name": "  "}, "name"),
        (RULE | {"model": ""}, "model"),
        (RULE | {"colour": "red"}, "colour"),
    ],
)
async def test_invalid_rules_are_refused_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    client, _, h = api
    response = await client.post(f"{V1}/rules", json=body, headers=h[Role.TECHNICIAN])
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", field)
    assert error["message"].startswith(f"{field}: ")


async def test_unknown_op_message_lists_the_allowed_ones(api: Api) -> None:
    client, _, h = api
    response = await client.post(f"{V1}/rules", json=RULE | {"op": "=="}, headers=h[Role.ADMIN])
    assert response.json()["error"]["message"] == "op: Input should be '<', '<=', '>' or '>='"


async def test_update_validation_conflict_and_not_found(api: Api) -> None:
    client, _, h = api
    tech = h[Role.TECHNICIAN]
    first = (await client.post(f"{V1}/rules", json=RULE, headers=tech)).json()
    await client.post(f"{V1}/rules", json=RULE | {"name": "second"}, headers=tech)
    url = f"{V1}/rules/{first['id']}"
    for body, field in (({"op": "!="}, "op"), ({"name": None}, "name"), ({"enabled": None}, "enabled")):
        response = await client.patch(url, json=body, headers=tech)
        assert (response.status_code, response.json()["error"]["field"]) == (422, field)
    taken = await client.patch(url, json={"name": "second"}, headers=tech)
    assert (taken.status_code, taken.json()["error"]["field"]) == (409, "name")
    duplicate = await client.post(f"{V1}/rules", json=RULE, headers=tech)
    assert (duplicate.status_code, duplicate.json()["error"]["code"]) == (409, "conflict")
    assert (await client.patch(f"{V1}/rules/999", json={"value": 1}, headers=tech)).status_code == 404
    bad_id = await client.get(f"{V1}/rules/abc", headers=tech)
    assert (bad_id.status_code, bad_id.json()["error"]["field"]) == (422, "rule_id")


async def test_alerts_are_listed_by_device_and_activity(api: Api) -> None:
    client, runtime, h = api
    ops = h[Role.OPS]
    rule = (await client.post(f"{V1}/rules", json=RULE, headers=h[Role.TECHNICIAN])).json()
    await send_temperatures(runtime, "hot-1", 1, [(0, 235), (5, 240), (10, 238), (15, 200)])
    await send_temperatures(runtime, "hot-2", 1, [(0, 250), (10, 250)])
    await send_temperatures(runtime, "cool-1", 1, [(0, 20), (10, 21)])
    report = await evaluate_rules(runtime.sessions)
    assert (report.raised, report.ended) == (2, 1)

    everything = (await client.get(f"{V1}/rules/alerts", headers=ops)).json()
    assert everything["total"] == 2
    active = (await client.get(f"{V1}/rules/alerts", params={"active": "true"}, headers=ops)).json()
    assert [alert["device_id"] for alert in active["items"]] == ["hot-2"]
    [ended] = (
        await client.get(f"{V1}/rules/alerts", params={"device": "hot-1", "active": "false"}, headers=ops)
    ).json()["items"]
    assert ended == {
        "id": ended["id"],
        "rule_id": rule["id"],
        "rule_name": "fuser hot",
        "metric": TEMP,
        "condition": f"{TEMP} > 230 for 600s",
        "severity": "warning",
        "device_id": "hot-1",
        "started_at": "2026-11-20T12:00:00Z",
        "raised_at": "2026-11-20T12:10:00Z",
        "ended_at": "2026-11-20T12:15:00Z",
        "value": 238.0,
        "active": False,
    }
    none = await client.get(f"{V1}/rules/alerts", params={"device": "cool-1"}, headers=ops)
    assert none.json()["total"] == 0
    bad = await client.get(f"{V1}/rules/alerts", params={"active": "maybe"}, headers=ops)
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "active")


async def test_the_server_evaluates_rules_periodically(db_url: str) -> None:
    async with api_client(server_settings(db_url, maintenance={"rule_interval": 0.05})) as (client, runtime):
        headers = {"Authorization": f"Bearer {await create_token(runtime, 'alice', Role.ADMIN)}"}
        created = await client.post(f"{V1}/rules", json=RULE | {"duration_s": 0}, headers=headers)
        assert created.status_code == 201
        await send_temperatures(runtime, "bg-1", 1, [(0, 260)])

        async def raised() -> list[dict[str, Any]]:
            body = (await client.get(f"{V1}/rules/alerts", params={"device": "bg-1"}, headers=headers)).json()
            return list(body["items"])

        [alert] = await eventually(raised, timeout=20, what="the evaluator raised the alert")
        assert alert["value"] == 260.0
