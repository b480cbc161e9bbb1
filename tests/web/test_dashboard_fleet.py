"""The dashboard's charts (their own requests, the KPI API's figures) and the fleet table's
consumables-at-risk column, over HTTP."""

from __future__ import annotations

import re
from datetime import timedelta

from server.db.models import Event
from server.db.types import utcnow
from tests.support.server import V1, bearer
from tests.web.seed import PERIOD
from tests.web.support import Console, sign_in, token_for


async def _api(console: Console, token: str, group_by: str) -> list[dict[str, object]]:
    answer = await console.client.get(
        f"{V1}/kpis", params={**PERIOD, "group_by": group_by}, headers=bearer(token)
    )
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, object]] = answer.json()["rows"]
    return rows


async def test_dashboard_page_links_its_charts_and_they_are_the_apis_figures(console: Console) -> None:
    await sign_in(console.client, "olga")
    token = await token_for(console, "olga")
    page = await console.client.get("/", params=PERIOD)
    urls = dict(re.findall(r'data-src-([a-z-]+)="([^"]+)"', page.text))
    assert set(urls) == {"weekly", "models", "fault-codes"}
    for url in urls.values():
        assert f"from={PERIOD['from']}" in url
        assert f"to={PERIOD['to']}" in url

    weekly = (await console.client.get(urls["weekly"].replace("&amp;", "&"))).json()
    rows = await _api(console, token, "week")
    assert len(weekly["x"]) == len(rows) == 8
    for channel in ("auto", "customer", "remote", "field"):
        assert weekly[channel] == [row["kpis"][f"resolved_{channel}"] for row in rows]  # type: ignore[index]
    assert sum(sum(weekly[c]) for c in ("auto", "customer", "remote", "field")) > 0

    models = (await console.client.get(urls["models"].replace("&amp;", "&"))).json()
    by_model = sorted(
        (
            (r["group"]["label"], r["kpis"]["downtime_s"] / 3600)
            for r in await _api(console, token, "model")  # type: ignore[index,operator]
            if r["kpis"]["downtime_s"]
        ),  # type: ignore[index]
        key=lambda pair: -pair[1],
    )
    assert models["labels"] == [label for label, _ in by_model][:10]
    assert models["hours"] == sorted(models["hours"], reverse=True)
    assert models["hours"][0] == round(by_model[0][1], 2)

    codes = (await console.client.get(urls["fault-codes"].replace("&amp;", "&"))).json()
    by_code = {
        r["group"]["label"]: r["kpis"]["mtrs_mean_s"] * r["kpis"]["mtrs_n"] / 3600  # type: ignore[index,operator]
        for r in await _api(console, token, "fault_code")
        if r["kpis"]["mtrs_n"]  # type: ignore[index]
    }
    assert codes["labels"], "the generated history has fault codes"
    assert codes["labels"][0] == max(by_code, key=lambda k: by_code[k])
    assert codes["hours"][0] == round(max(by_code.values()), 2)


async def test_chart_errors_are_json_naming_the_field(console: Console) -> None:
    await sign_in(console.client, "olga")
    unknown = await console.client.get("/dashboard/charts/pie", params=PERIOD)
    assert unknown.status_code == 422
    assert unknown.json()["field"] == "name"
    backwards = await console.client.get(
        "/dashboard/charts/weekly", params={"from": "2026-03-01", "to": "2026-01-01"}
    )
    assert backwards.status_code == 422
    assert backwards.json()["field"] == "from"


async def test_customer_charts_are_their_own_customers(console: Console) -> None:
    await sign_in(console.client, "carl")
    mine = await console.client.get("/dashboard/charts/weekly", params=PERIOD)
    token = await token_for(console, "carl")
    rows = await _api(console, token, "week")  # the API scopes a customer to their customer
    assert mine.json()["remote"] == [row["kpis"]["resolved_remote"] for row in rows]  # type: ignore[index]
    other = console.seeded.customers[1]
    refused = await console.client.get("/dashboard/charts/weekly", params={**PERIOD, "customer": other})
    assert refused.status_code == 404


async def test_fleet_shows_consumables_at_risk_until_maintenance(console: Console) -> None:
    devices = console.seeded.devices[console.seeded.customers[0]]
    low, replaced, low_again = devices[:3]
    now = utcnow()
    seq = iter(range(1, 100))

    def event(device_id: str, type_: str, code: str | None, hours_ago: float) -> Event:
        ts = now - timedelta(hours=hours_ago)
        return Event(
            device_id=device_id,
            seq=next(seq),
            type=type_,
            code=code,
            severity="warning",
            ts=ts,
            received_at=ts,
        )

    async with console.runtime.sessions() as session:
        session.add_all(
            [
                event(low, "consumable.low", "TONER_LOW_BLACK", 5),
                event(low, "consumable.low", "TONER_LOW_CYAN", 4),
                event(low, "consumable.low", "TONER_LOW_CYAN", 3),  # the same consumable again
                event(replaced, "consumable.low", "TONER_LOW_BLACK", 5),
                event(replaced, "maintenance.ended", None, 2),  # replaced: cleared
                event(low_again, "maintenance.ended", None, 6),
                event(low_again, "consumable.low", "TONER_LOW_BLACK", 1),  # low after the maintenance
            ]
        )
        await session.commit()
    await sign_in(console.client, "olga")
    page = await console.client.get("/fleet", params={"sort": "risk", "dir": "desc"})
    risk = dict(re.findall(r'<tr data-device="([^"]+)"[^>]*>.*?data-risk="(\d+)"', page.text, re.S))
    assert risk[low] == "2"
    assert risk[replaced] == "0"
    assert risk[low_again] == "1"
    assert sum(int(n) for n in risk.values()) == 3
    order = re.findall(r'<tr data-device="([^"]+)"', page.text)
    assert order[:2] == [low, low_again]
    assert f'<tr data-device="{low}" class="at-risk">' in page.text
