"""The dashboard's MTRS tile (issue 15, item 7): MTRS per failure episode as its figure, MTRS
per incident as its sub-line, both the KPI API's (over HTTP, no browser)."""

from __future__ import annotations

import re

import pytest

from server.web.rendering import duration
from tests.support.server import V1, bearer
from tests.web.seed import PERIOD
from tests.web.support import Console, sign_in
from tests.web.support import token_for as _token


async def test_the_mtrs_tile_shows_per_episode_with_per_incident_beneath(console: Console) -> None:
    await sign_in(console.client, "olga")
    page = await console.client.get("/", params=PERIOD)
    assert page.status_code == 200, page.text
    api = await console.client.get(f"{V1}/kpis", params=PERIOD, headers=bearer(await _token(console, "olga")))
    kpis = api.json()["rows"][0]["kpis"]
    assert kpis["mtrs_episode_n"] > kpis["mtrs_n"] > 0  # the seeded history has reopened incidents
    tile = re.search(r'<li class="tile" data-kpi="mtrs_mean_s".*?</li>', page.text, re.DOTALL)
    assert tile, "no MTRS tile"
    html = tile.group(0)
    assert '<span class="label">MTRS per episode (mean)</span>' in html
    value = re.search(r'class="value" data-kpi="mtrs_episode_mean_s" data-value="([^"]*)">([^<]*)<', html)
    assert value, html
    assert float(value.group(1)) == pytest.approx(kpis["mtrs_episode_mean_s"])
    assert value.group(2) == duration(kpis["mtrs_episode_mean_s"])
    sub = re.search(r'data-kpi="mtrs_mean_s" data-value="([^"]*)" title="[^"]*">per incident ([^<]*)<', html)
    assert sub, html
    assert float(sub.group(1)) == pytest.approx(kpis["mtrs_mean_s"])
    assert sub.group(2) == f"{duration(kpis['mtrs_mean_s'])} ({kpis['mtrs_n']} incidents)"
    assert f"{kpis['mtrs_episode_n']} episodes restored" in html
