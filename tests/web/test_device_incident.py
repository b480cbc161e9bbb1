"""The device page's telemetry charts and forecasts, and the incident page's similar past
incidents (knowledge suggestions), over HTTP against the API's own answers."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

from server.db.models import Device, Incident, TelemetrySample
from server.db.types import utcnow
from tests.support.server import V1, bearer
from tests.web.support import Console, sign_in, token_for

TONER = "printer.toner.black.percent"
TEMPERATURE = "printer.fuser.temperature.celsius"


async def _with_telemetry(console: Console, device_id: str) -> None:
    """A toner falling 3 %/day over ten days (a forecast with a date) and a steady temperature."""
    now = utcnow()
    async with console.runtime.sessions() as session:
        for i in range(20):
            ts = now - timedelta(days=10) + timedelta(hours=12 * i)
            session.add(TelemetrySample(device_id=device_id, metric=TONER, ts=ts, value=80.0 - 1.5 * i))
            session.add(TelemetrySample(device_id=device_id, metric=TEMPERATURE, ts=ts, value=180.0 + i % 3))
        await session.commit()


def _script_json(text: str, element_id: str) -> object:
    found = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', text, re.S)
    assert found, f"no {element_id} data in the page"
    return json.loads(found.group(1))


async def test_device_page_charts_the_apis_telemetry_and_shows_forecast_dates(console: Console) -> None:
    device_id = console.seeded.devices[console.seeded.customers[0]][0]
    await _with_telemetry(console, device_id)
    await sign_in(console.client, "olga")
    page = await console.client.get(f"/devices/{device_id}", params={"days": 30})
    assert page.status_code == 200, page.text
    token = await token_for(console, "olga")
    charted = {s["metric"]: s for s in _script_json(page.text, "telemetry-data")}  # type: ignore[union-attr]
    assert set(charted) == {TONER, TEMPERATURE}
    for metric, series in charted.items():
        api = await console.client.get(
            f"{V1}/devices/{device_id}/telemetry", params={"metric": metric}, headers=bearer(token)
        )
        samples = list(reversed(api.json()))
        assert series["y"] == [s["value"] for s in samples]
        assert series["x"] == sorted(series["x"])  # oldest first, as uPlot needs
        assert f'data-metric="{metric}"' in page.text
    assert page.text.count('class="reset-zoom') == 2
    forecast = await console.client.get(f"{V1}/devices/{device_id}/forecast", headers=bearer(token))
    toner = next(f for f in forecast.json() if f["metric"] == TONER)
    assert toner["status"] == "ok"
    row = re.search(rf'<tr data-metric="{TONER}" data-status="ok" data-eta="([^"]+)">', page.text)
    assert row, "no forecast row for the toner"
    assert row.group(1)[:19] == toner["eta"][:19]
    assert toner["eta"][:10] in page.text  # the predicted date, readable


async def test_device_page_without_telemetry_says_so(console: Console) -> None:
    device_id = console.seeded.devices[console.seeded.customers[0]][1]
    await sign_in(console.client, "olga")
    page = await console.client.get(f"/devices/{device_id}")
    assert "No telemetry in this window." in page.text
    assert "telemetry.js" not in page.text
    assert "No consumable or wear counter reported" in page.text


async def _incident(console: Console, device_id: str, code: str) -> int:
    now = utcnow()
    async with console.runtime.sessions() as session:
        incident = Incident(
            device_id=device_id,
            kind="fault",
            severity="error",
            effect="down",
            fault_code=code,
            symptom="paper jam in tray 2",
            t_fault=now - timedelta(hours=3),
            t_detect=now - timedelta(hours=3),
        )
        session.add(incident)
        await session.commit()
        return incident.id


async def test_incident_page_shows_similar_past_incidents_with_why_for_staff_only(console: Console) -> None:
    device_id = console.seeded.devices[console.seeded.customers[0]][0]
    async with console.runtime.sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        model = device.model
    tech = bearer(await token_for(console, "tina"))
    created = await console.client.post(
        f"{V1}/knowledge/articles",
        json={
            "title": "Clear the tray 2 jam",
            "symptom": "paper jam in tray 2",
            "cause": "worn pickup roller",
            "resolution": "open tray 2, remove the sheet, run a test page",
            "models": [model],
            "fault_codes": ["JAM_TRAY2"],
            "customer_safe": True,
        },
        headers=tech,
    )
    assert created.status_code == 201, created.text
    article = created.json()["id"]
    assert (
        await console.client.post(f"{V1}/knowledge/articles/{article}/publish", headers=tech)
    ).status_code == 200
    past = await _incident(console, device_id, "JAM_TRAY2")
    solved = await console.client.post(
        f"{V1}/incidents/{past}/resolve",
        json={"channel": "remote", "cause": "jam", "resolution": "cleared it", "article_id": article},
        headers=tech,
    )
    assert solved.status_code == 200, solved.text
    current = await _incident(console, device_id, "JAM_TRAY2")

    await sign_in(console.client, "tina")
    page = await console.client.get(f"/incidents/{current}")
    assert page.status_code == 200
    api = await console.client.get(f"{V1}/incidents/{current}/suggestions", headers=tech)
    first = api.json()[0]
    assert first["article_id"] == article
    text = html.unescape(page.text)
    assert "Similar past incidents and how they were solved" in text
    assert f'data-article="{article}"' in text
    assert first["why"] in text
    assert "open tray 2, remove the sheet, run a test page" in text  # how it was solved
    assert f'data-past="{past}"' in text  # the past incident it fixed, linked
    assert f'data-past="{current}"' not in text

    await sign_in(console.client, "carl")  # a customer: the API refuses suggestions, so does the page
    customer = bearer(await token_for(console, "carl"))
    assert (
        await console.client.get(f"{V1}/incidents/{current}/suggestions", headers=customer)
    ).status_code == 403
    as_customer = await console.client.get(f"/incidents/{current}")
    assert as_customer.status_code == 200
    assert "Similar past incidents" not in as_customer.text
