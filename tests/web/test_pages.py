"""The console over HTTP (in-process, no browser): sign-in with CSRF, role and scope on every
page, the dashboard's figures are the KPI API's, the fleet table filters, sorts and pages."""

from __future__ import annotations

import re

import pytest

from tests.support.server import V1, bearer
from tests.web.seed import PASSWORD, PERIOD
from tests.web.support import Console, open_incident, sign_in
from tests.web.support import csrf_of as _csrf
from tests.web.support import token_for as _token


async def test_pages_need_sign_in(console: Console) -> None:
    answer = await console.client.get("/fleet?q=x")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/fleet%3Fq%3Dx"


async def test_wrong_password_and_forged_form_are_refused(console: Console) -> None:
    form = await console.client.get("/login")
    wrong = await console.client.post(
        "/login", data={"csrf": _csrf(form.text), "username": "olga", "password": "nope"}
    )
    assert wrong.status_code == 401
    assert "Wrong user name or password" in wrong.text
    forged = await console.client.post(
        "/login", data={"csrf": "guess", "username": "olga", "password": PASSWORD}
    )
    assert forged.status_code == 401
    assert "expired" in forged.text
    assert "fleetcare_session" not in forged.headers.get("set-cookie", "")


async def test_sign_in_redirect_stays_on_the_server(console: Console) -> None:
    form = await console.client.get("/login?next=//evil.example/x")
    assert 'name="next" value="/"' in form.text


async def test_post_without_csrf_token_is_refused_and_sign_out_revokes(console: Console) -> None:
    csrf = await sign_in(console.client, "olga")
    refused = await console.client.post("/logout", data={"csrf": "stale"})
    assert refused.status_code == 403
    out = await console.client.post("/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert (await console.client.get("/fleet")).status_code == 303  # the token was revoked


def _tile(html: str, name: str) -> float | None:
    found = re.search(rf'data-kpi="{name}" data-value="([^"]*)"', html)
    assert found, f"tile {name} missing"
    return float(found.group(1)) if found.group(1) else None


async def test_dashboard_tiles_are_the_kpi_api_figures(console: Console) -> None:
    await sign_in(console.client, "olga")
    page = await console.client.get("/", params=PERIOD)
    assert page.status_code == 200, page.text
    token = await _token(console, "olga")
    api = await console.client.get(f"{V1}/kpis", params=PERIOD, headers=bearer(token))
    kpis = api.json()["rows"][0]["kpis"]
    for name in (
        "availability",
        "coverage",
        "downtime_s",
        "mtrs_mean_s",
        "self_resolution_rate",
        "remote_usage_rate",
        "dispatches_avoided",
        "dispatches_avoided_value",
    ):
        expected = kpis[name]
        assert _tile(page.text, name) == (None if expected is None else pytest.approx(expected)), name
    assert kpis["incidents"] > 0  # the history is not empty: the comparison means something
    # "Dispatches avoided" beside what it is counted among (issue 15: a bare 0 read as a lie)
    among = (kpis["resolved_remote"] or 0) + (kpis["resolved_customer"] or 0)
    assert f">of {among} resolved remotely or by the customer</span>" in page.text
    link = re.search(r'href="(/dashboard\.csv\?[^"]+)"', page.text)
    assert link, "no CSV export link"
    csv = await console.client.get(link.group(1).replace("&amp;", "&"))
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")


async def test_fleet_table_filters_sorts_and_pages(console: Console) -> None:
    await sign_in(console.client, "olga")
    everything = await console.client.get("/fleet")
    assert 'id="fleet-total">40<' in everything.text
    one = console.seeded.devices[console.seeded.customers[1]][0]
    found = await console.client.get("/fleet", params={"q": one}, headers={"HX-Request": "true"})
    assert f'data-device="{one}"' in found.text
    assert "<html" not in found.text
    online = await console.client.get("/fleet", params={"online": "1"})
    assert 'id="fleet-total">14<' in online.text  # every third of 40 devices
    ordered = await console.client.get("/fleet", params={"sort": "id", "dir": "desc"})
    ids = re.findall(r'data-device="([^"]+)"', ordered.text)
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == 40


async def test_customer_sees_only_their_devices(console: Console) -> None:
    mine, other = (console.seeded.devices[c] for c in console.seeded.customers[:2])
    await sign_in(console.client, "carl")
    listed = set(re.findall(r'data-device="([^"]+)"', (await console.client.get("/fleet")).text))
    assert listed == set(mine)
    assert (await console.client.get(f"/devices/{mine[0]}")).status_code == 200
    assert (await console.client.get(f"/devices/{other[0]}")).status_code == 404
    token = await _token(console, "carl")
    assert (await console.client.get(f"{V1}/devices/{other[0]}", headers=bearer(token))).status_code == 404
    assert (await console.client.get("/audit")).status_code == 403  # ops and admin only, as the API


async def test_technician_acknowledges_and_resolves_an_incident(console: Console) -> None:
    incident = await open_incident(console, console.seeded.devices[console.seeded.customers[0]][0])
    csrf = await sign_in(console.client, "tina")
    token = await _token(console, "tina")
    page = await console.client.get(f"/incidents/{incident}")
    assert page.status_code == 200
    assert "Resolve" in page.text
    ack = await console.client.post(f"/incidents/{incident}/ack", data={"csrf": csrf})
    assert ack.status_code == 303, ack.text
    done = await console.client.post(
        f"/incidents/{incident}/resolve",
        data={"csrf": csrf, "channel": "remote", "cause": "stuck valve", "resolution": "reset it"},
    )
    assert done.status_code == 303, done.text
    after = await console.client.get(f"{V1}/incidents/{incident}", headers=bearer(token))
    assert after.json()["status"] == "resolved"
    assert after.json()["channel"] == "remote"
