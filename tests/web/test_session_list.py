"""The session list (``/sessions``) and its CSV over HTTP on both databases — the sessions opened
and closed through the session service — and once in headless Chromium: who sees which
sessions (the scope of ``GET /api/v1/sessions``), live ones first, the filters, 422s naming
the field, the CSV's rows across pages, the command count from the database."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from certs import PkiDir
from server.base import users
from server.base.users import Principal
from server.db.models import Device
from server.db.types import utcnow
from server.runtime import Runtime
from server.sessions.service import SessionFilter, list_sessions
from server.web.pages.session_list import CSV_HEADER
from tests.support.server import V1, api_client, bearer, server_settings
from tests.web.seed import Seeded, seed
from tests.web.support import Console, sign_in, token_for
from tests.web.test_browser import CHROMIUM, browser, live, screenshot, shots, signed_in  # noqa: F401

ROW = re.compile(r'<tr data-session="([^"]+)" data-state="([^"]+)" data-device="([^"]+)"')


async def as_user(console: Console, name: str) -> Principal:
    """The principal behind ``name`` (the seed's users), for calling the services."""
    token = await token_for(console, name)
    async with console.runtime.sessions() as session:
        return await users.authenticate(session, token)


async def open_session(runtime: Runtime, who: Principal, device_id: str, reason: str) -> str:
    """A session opened through the session service (active at once: the seed's sites are
    unattended)."""
    remote = await runtime.session_service.open(who, device_id, reason=reason)
    assert remote.state == "active", remote.state
    return remote.id


def listed(html: str) -> list[tuple[str, str, str]]:
    """(session, state, device) of every row of the page, in order."""
    return ROW.findall(html)


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.fixture
async def fleet(console: Console) -> dict[str, Any]:
    """tina: one active and one closed (fixed) session on her customer's devices; ada: one
    active session on the second customer's device."""
    seeded = console.seeded
    mine, other = (seeded.devices[c] for c in seeded.customers[:2])
    tina, ada = await as_user(console, "tina"), await as_user(console, "ada")
    svc = console.runtime.session_service
    done = await open_session(console.runtime, tina, mine[0], "paper jam")
    await svc.close(tina, done, outcome="cleared tray 2", fixed=True)
    live_one = await open_session(console.runtime, tina, mine[1], "toner low")
    theirs = await open_session(console.runtime, ada, other[0], "firmware check")
    return {"tina": tina, "ada": ada, "closed": done, "live": live_one, "theirs": theirs, "mine": mine}


async def test_each_role_sees_the_sessions_of_its_scope_live_first(
    console: Console, fleet: dict[str, Any]
) -> None:
    await sign_in(console.client, "olga")
    page = await console.client.get("/sessions")
    assert page.status_code == 200, page.text
    rows = listed(page.text)
    # live first (newest first among them), then the ended ones
    assert [r[0] for r in rows] == [fleet["theirs"], fleet["live"], fleet["closed"]]
    assert [r[1] for r in rows] == ["active", "active", "closed"]
    assert f'href="/sessions/{fleet["closed"]}"' in page.text
    assert f'href="/devices/{fleet["mine"][0]}"' in page.text
    assert 'data-fixed="yes"' in page.text
    assert "cleared tray 2" in page.text
    assert 'id="sessions-total">3<' in page.text
    assert 'data-nav="sessions"' in page.text

    await sign_in(console.client, "tina")
    page = await console.client.get("/sessions")
    assert [r[0] for r in listed(page.text)] == [fleet["live"], fleet["closed"]]
    async with console.runtime.sessions() as session:  # the API's list, the same scope
        api_rows, _ = await list_sessions(session, fleet["tina"], SessionFilter())
    assert {r.id for r in api_rows} == {fleet["live"], fleet["closed"]}

    await sign_in(console.client, "carl")  # customers get no session list (READ_SESSIONS)
    refused = await console.client.get("/sessions")
    assert refused.status_code == 403
    assert "technician" in refused.text
    assert (await console.client.get("/sessions.csv")).status_code == 403
    assert 'href="/sessions"' not in (await console.client.get("/fleet")).text


async def test_filters_narrow_the_list(console: Console, fleet: dict[str, Any]) -> None:
    await sign_in(console.client, "olga")

    async def ids(**params: str) -> set[str]:
        page = await console.client.get("/sessions", params=params)
        assert page.status_code == 200, page.text
        return {r[0] for r in listed(page.text)}

    assert await ids(state="live") == {fleet["live"], fleet["theirs"]}
    assert await ids(state="closed") == {fleet["closed"]}
    assert await ids(state="all") == {fleet["live"], fleet["theirs"], fleet["closed"]}
    assert await ids(technician="ada") == {fleet["theirs"]}
    assert await ids(device=fleet["mine"][1][2:].upper()) == {fleet["live"]}  # part of the id, any case
    assert await ids(customer=str(console.seeded.customers[0])) == {fleet["live"], fleet["closed"]}
    async with console.runtime.sessions() as session:
        device = await session.get(Device, fleet["mine"][0])
        assert device is not None
        model, site_id = device.model, device.site_id
    assert model is not None
    assert fleet["closed"] in await ids(model=model)
    if site_id is not None:
        assert fleet["closed"] in await ids(site=str(site_id))
    today = utcnow().date()
    assert len(await ids(since=today.isoformat())) == 3
    assert await ids(until=today.isoformat()) == set()  # opened before today: none
    assert await ids(state="live", technician="tina") == {fleet["live"]}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=open", "state"),
        ("customer=acme", "customer"),
        ("since=yesterday", "since"),
        ("page=x", "page"),
        ("status=live", "status"),
    ],
)
async def test_a_bad_filter_value_is_a_422_naming_the_field(console: Console, query: str, field: str) -> None:
    await sign_in(console.client, "olga")
    for path in ("/sessions", "/sessions.csv") if field != "page" else ("/sessions",):  # CSV: every page
        answer = await console.client.get(f"{path}?{query}")
        assert answer.status_code == 422, (path, answer.text[:300])
        assert f"{field}:" in answer.text


async def test_an_empty_period_is_a_422_naming_until(console: Console) -> None:
    await sign_in(console.client, "olga")
    answer = await console.client.get("/sessions?since=2026-03-02&until=2026-03-01")
    assert answer.status_code == 422
    assert "until:" in answer.text


async def test_the_csv_holds_every_page_the_filter_selects(console: Console) -> None:
    """55 closed sessions of tina and one of ada's: two pages on the page, one CSV."""
    seeded = console.seeded
    mine = seeded.devices[seeded.customers[0]]
    tina, ada = await as_user(console, "tina"), await as_user(console, "ada")
    svc = console.runtime.session_service
    opened = []
    for n in range(55):
        session_id = await open_session(console.runtime, tina, mine[n % len(mine)], f"visit {n}")
        await svc.close(tina, session_id, outcome=f"=done {n}", fixed=n % 2 == 0)
        opened.append(session_id)
    await open_session(console.runtime, ada, seeded.devices[seeded.customers[1]][0], "other")
    await sign_in(console.client, "olga")
    first = await console.client.get("/sessions", params={"technician": "tina"})
    assert 'id="sessions-total">55<' in first.text
    assert "page 1 of 2" in first.text
    on_pages = [r[0] for r in listed(first.text)]
    assert len(on_pages) == 50
    assert 'rel="next"' in first.text
    assert "technician=tina" in first.text
    second = await console.client.get("/sessions", params={"technician": "tina", "page": "2"})
    on_pages += [r[0] for r in listed(second.text)]
    assert sorted(on_pages) == sorted(opened)

    export = await console.client.get("/sessions.csv", params={"technician": "tina", "page": "2"})
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert export.headers["content-disposition"].startswith("attachment")
    rows = csv_rows(export.text)
    assert tuple(rows[0]) == CSV_HEADER
    column = {name: i for i, name in enumerate(CSV_HEADER)}
    assert [r[column["id"]] for r in rows[1:]] == on_pages  # every page, in the page's order
    assert {r[column["technician"]] for r in rows[1:]} == {"tina"}
    assert {r[column["state"]] for r in rows[1:]} == {"closed"}
    by_id = {r[column["id"]]: r for r in rows[1:]}
    newest = by_id[opened[-1]]
    assert newest[column["fixed"]] == "true"  # 54 is even
    assert newest[column["outcome"]] == "'=done 54"  # a formula-like cell stays text
    assert newest[column["commands"]] == "0"

    everything = csv_rows((await console.client.get("/sessions.csv")).text)
    assert len(everything) == 1 + 56


CATALOGUE = [{"name": "selftest", "policy": "allowed"}]


@pytest.fixture
async def signing_console(tmp_path: object, db_url: str, pki: PkiDir) -> AsyncIterator[Console]:
    """The console on the seeded fleet with a signing key, so a session can send commands."""
    settings = server_settings(db_url, pki=pki, incidents={"enabled": False})
    async with api_client(settings) as (client, runtime):
        yield Console(client, runtime, await seed(runtime))


async def test_the_command_count_is_the_sessions_commands(signing_console: Console) -> None:
    console = signing_console
    device_id = console.seeded.devices[console.seeded.customers[0]][0]
    async with console.runtime.sessions() as session:  # the catalogue the agent advertised
        device = await session.get(Device, device_id)
        assert device is not None
        device.inventory = {**device.inventory, "agent": {"version": "1", "catalogue": CATALOGUE}}
        await session.commit()
    tina = await as_user(console, "tina")
    session_id = await open_session(console.runtime, tina, device_id, "diagnose")
    for _ in range(2):
        await console.runtime.session_service.run_command(tina, session_id, "selftest", {})
    token = await token_for(console, "tina")
    sent = await console.client.get(f"{V1}/devices/{device_id}/commands", headers=bearer(token))
    assert sent.status_code == 200, sent.text
    assert len([c for c in sent.json()["items"] if c["session_id"] == session_id]) == 2
    await sign_in(console.client, "tina")
    page = await console.client.get("/sessions")
    assert re.search(rf'data-session="{session_id}".*?<td class="num commands">2</td>', page.text, re.S)
    rows = csv_rows((await console.client.get("/sessions.csv")).text)
    assert rows[1][CSV_HEADER.index("commands")] == "2"


@pytest.mark.integration
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
async def test_the_session_list_in_a_browser(
    live: tuple[str, Seeded, Runtime],  # noqa: F811
    browser: object,  # noqa: F811
    shots: list[Path],  # noqa: F811
) -> None:
    base_url, seeded, runtime = live
    mine = seeded.devices[seeded.customers[0]]
    async with runtime.sessions() as session:
        tina = await users.authenticate(
            session, (await users.issue_token(session, "tina", actor="test")).token
        )
    done = await runtime.session_service.open(tina, mine[0], reason="paper jam")
    await runtime.session_service.close(tina, done.id, outcome="cleared", fixed=True)
    active = await runtime.session_service.open(tina, mine[1], reason="toner")
    page: Any = await signed_in(browser, base_url, "olga")
    await page.get_by_role("link", name="Sessions").click()
    await page.wait_for_url(f"{base_url}/sessions")
    assert await page.locator("#sessions-total").inner_text() == "2"
    first = page.locator("tbody tr[data-session]").first
    assert await first.get_attribute("data-session") == active.id  # live first
    await page.get_by_label("State").select_option("closed")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r".*state=closed.*"))
    rows = await page.locator("tbody tr[data-session]").evaluate_all(
        "rows => rows.map(r => r.dataset.session)"
    )
    assert rows == [done.id]
    await screenshot(page, shots, "sessions")
    await page.get_by_role("link", name=done.id).click()
    await page.wait_for_url(f"{base_url}/sessions/{done.id}")
