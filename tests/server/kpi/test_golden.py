"""The golden scenario (tests/server/kpi/golden.py): every KPI worked out by hand, checked through
the reference engine, the SQL engine on SQLite and PostgreSQL, and ``/api/v1/kpis`` (JSON, CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Role
from server.errors import InvalidInput
from server.kpi import COLUMNS, GroupBy, Report, ReportSpec, compute_report, reference_report
from server.kpi.records import insert_dataset
from server.kpi.report import DEFAULT_BASELINE_RESTORE_S
from server.runtime import Runtime
from tests.server.kpi import golden
from tests.support.server import api_client, create_token, server_settings

V1 = "/api/v1"


def check(values: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    for name, want in expected.items():
        got = values[name]
        if isinstance(want, float) and not isinstance(want, bool):
            assert got == pytest.approx(want, rel=1e-12, abs=1e-6), (
                f"{where}: {name} = {got}, expected {want}"
            )
        else:
            assert got == want, f"{where}: {name} = {got!r}, expected {want!r}"
            assert type(got) is type(want), f"{where}: {name} is {type(got)}, expected {type(want)}"


def spec(**kw: Any) -> ReportSpec:
    return ReportSpec(golden.START, golden.END, as_of=golden.AS_OF, **kw)


def check_report(report: Report) -> None:
    """The whole-fleet report: one row, every KPI column."""
    assert len(report.rows) == 1
    row = report.rows[0]
    assert (row.key, row.label, row.start, row.end) == (None, "fleet", golden.T0, golden.h(168))
    expected = golden.fleet_expectations()
    assert set(expected) == {kpi.name for kpi in COLUMNS}, "the golden test checks every KPI"
    check(row.values, expected, report.engine)


def check_by_customer(report: Report) -> None:
    rows = {row.key: row for row in report.rows}
    assert [row.label for row in report.rows] == ["Acme Hospital", "Borealis Labs"]
    for key, expected in golden.customer_expectations().items():
        check(rows[key].values, expected, f"{report.engine} customer {key}")


def check_by_fault_code(report: Report) -> None:
    rows = {row.key: row for row in report.rows}
    assert set(rows) == {None, "E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8", "E9"}
    for key, expected in golden.fault_code_expectations().items():
        check(rows[key].values, expected, f"{report.engine} fault code {key}")


def test_golden_reference_engine() -> None:
    ds = golden.dataset()
    check_report(reference_report(ds, spec()))
    check_by_customer(reference_report(ds, spec(group_by=GroupBy.CUSTOMER)))
    check_by_fault_code(reference_report(ds, spec(group_by=GroupBy.FAULT_CODE)))


@pytest.fixture
async def golden_db(sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    async with sessions() as session:
        await insert_dataset(session, golden.dataset())
    return sessions


async def test_golden_sql_engine(golden_db: async_sessionmaker[AsyncSession]) -> None:
    async with golden_db() as session:
        check_report(await compute_report(session, spec()))
        check_by_customer(await compute_report(session, spec(group_by=GroupBy.CUSTOMER)))
        check_by_fault_code(await compute_report(session, spec(group_by=GroupBy.FAULT_CODE)))
        # one ISO week: the weekly report is the fleet report, labelled
        week = await compute_report(session, spec(group_by=GroupBy.WEEK))
        assert [row.label for row in week.rows] == ["2026-W10"]
        check(week.rows[0].values, golden.fleet_expectations(), "week")
        # a filter is the matching group
        borealis = await compute_report(session, spec(customer=2))
        check(borealis.rows[0].values, golden.customer_expectations()[2], "customer=2")
        e7 = await compute_report(session, spec(fault_code="E7"))
        check(e7.rows[0].values, golden.fault_code_expectations()["E7"], "fault_code=E7")
        ct7 = await compute_report(session, spec(model="CT-7", group_by=GroupBy.SITE))
        assert [(row.key, row.label) for row in ct7.rows] == [
            (1, "Acme Hospital / North"),
            (3, "Borealis Labs / Main"),
        ]
        check(ct7.rows[1].values, golden.state_expectations(["gold-xr1"]), "model=CT-7, site 3")


async def test_golden_downtime_avoided_against_another_baseline(
    golden_db: async_sessionmaker[AsyncSession],
) -> None:
    """The default baseline is [kpi] baseline_restore_hours; a longer one credits every dispatch
    avoided with more downtime avoided, the same in both engines."""
    assert DEFAULT_BASELINE_RESTORE_S == golden.BASELINE
    baseline = 12 * golden.HOUR
    avoided = golden.downtime_avoided(baseline)
    assert avoided["E"] == 2 * golden.HOUR  # 12 h - 10 h: no longer 0
    async with golden_db() as session:
        for by_customer in (False, True):
            wanted = spec(baseline_restore_s=baseline, group_by=GroupBy.CUSTOMER if by_customer else None)
            for report in (reference_report(golden.dataset(), wanted), await compute_report(session, wanted)):
                values = {row.key: row.values["downtime_avoided_s"] for row in report.rows}
                if by_customer:
                    assert values == pytest.approx({1: avoided["E"], 2: avoided["G"] + avoided["I"]})
                else:
                    assert values == pytest.approx({None: sum(avoided.values())})


def test_a_negative_baseline_is_refused() -> None:
    with pytest.raises(InvalidInput, match="baseline_restore_hours"):
        spec(baseline_restore_s=-1.0)


@pytest.fixture
async def api(
    db_url: str, golden_db: async_sessionmaker[AsyncSession]
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    async with api_client(server_settings(db_url)) as pair:
        yield pair


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


QUERY = {"from": "2026-03-02", "to": "2026-03-09T00:00:00Z", "as_of": "2026-06-01"}


async def test_golden_api_json_and_csv(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = api
    headers = bearer(await create_token(runtime, "kpi-ops", Role.OPS))

    response = await client.get(f"{V1}/kpis", params=QUERY, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["period"] == {
        "from": "2026-03-02T00:00:00Z",
        "to": "2026-03-09T00:00:00Z",
        "until": "2026-03-09T00:00:00Z",
        "as_of": "2026-06-01T00:00:00Z",
    }
    assert body["columns"] == [kpi.name for kpi in COLUMNS]
    assert set(body["definitions"]) == set(body["columns"])
    assert "union" in body["definitions"]["downtime_s"]["definition"]
    [row] = body["rows"]
    assert row["group"] == {"by": None, "key": None, "label": "fleet"}
    check(row["kpis"], golden.fleet_expectations(), "api json")

    by_customer = await client.get(f"{V1}/kpis", params={**QUERY, "group_by": "customer"}, headers=headers)
    rows = {r["group"]["key"]: r["kpis"] for r in by_customer.json()["rows"]}
    for key, expected in golden.customer_expectations().items():
        check(rows[key], expected, f"api customer {key}")

    as_csv = await client.get(f"{V1}/kpis", params={**QUERY, "format": "csv"}, headers=headers)
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert "kpis-20260302-20260309.csv" in as_csv.headers["content-disposition"]
    [line] = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert (line["group_by"], line["group_key"], line["group"]) == ("", "", "fleet")
    parsed: dict[str, Any] = {}
    for name, want in golden.fleet_expectations().items():
        cell = line[name]
        if want is None:
            parsed[name] = None if cell == "" else cell
        elif isinstance(want, bool):
            parsed[name] = {"true": True, "false": False}[cell]
        elif isinstance(want, int):
            parsed[name] = int(cell)
        else:
            parsed[name] = float(cell)
    check(parsed, golden.fleet_expectations(), "api csv")

    longer = await client.get(f"{V1}/kpis", params={**QUERY, "baseline_restore_hours": 12}, headers=headers)
    assert longer.status_code == 200, longer.text
    avoided = longer.json()["rows"][0]["kpis"]["downtime_avoided_s"]
    assert avoided == pytest.approx(sum(golden.downtime_avoided(12 * golden.HOUR).values()))


async def test_kpi_api_roles_and_errors(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = api
    for role in (Role.OPS, Role.ADMIN):  # a technician: only assigned customers (test_roles_scope.py)
        token = await create_token(runtime, f"kpi-{role.value}", role)
        assert (await client.get(f"{V1}/kpis", params=QUERY, headers=bearer(token))).status_code == 200
    provisioning = await create_token(runtime, "kpi-prov", Role.PROVISIONING)
    denied = await client.get(f"{V1}/kpis", params=QUERY, headers=bearer(provisioning))
    assert denied.status_code == 403
    assert (await client.get(f"{V1}/kpis", params=QUERY)).status_code == 401

    headers = bearer(await create_token(runtime, "kpi-ops2", Role.OPS))
    cases = [
        ({"from": "2026-03-09", "to": "2026-03-02"}, "from"),
        ({"from": "2026-03-02", "to": "2026-03-02"}, "from"),
        ({"from": "yesterday", "to": "2026-03-02"}, "from"),
        ({"from": "2026-03-02", "to": "2026-13-01"}, "to"),
        ({**QUERY, "group_by": "planet"}, "group_by"),
        ({**QUERY, "format": "xml"}, "format"),
        ({**QUERY, "customer": "acme"}, "customer"),
        ({"to": "2026-03-09"}, "from"),
        ({"from": "2000-01-01", "to": "2030-01-01"}, "to"),
        ({**QUERY, "baseline_restore_hours": "-1"}, "baseline_restore_hours"),
    ]
    for params, field in cases:
        response = await client.get(f"{V1}/kpis", params=params, headers=headers)
        assert response.status_code == 422, (params, response.text)
        error = response.json()["error"]
        assert error["field"] == field, (params, error)
        assert field in error["message"], (params, error)
    planet = await client.get(f"{V1}/kpis", params={**QUERY, "group_by": "planet"}, headers=headers)
    assert planet.json()["error"]["message"] == (
        "group_by: 'planet' is not one of customer, site, model, fault_code, week, month"
    )

    definitions = await client.get(f"{V1}/kpis/definitions", headers=headers)
    assert definitions.status_code == 200
    body = definitions.json()
    assert body["columns"] == [kpi.name for kpi in COLUMNS]
    assert body["definitions"]["mtbf_s"]["unit"] == "seconds"
    assert "censored" in body["definitions"]["mtbf_s"]["definition"]
