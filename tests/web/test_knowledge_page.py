"""The knowledge page (``/knowledge``) and its CSV over HTTP on both databases — articles written,
published and used through the knowledge service and the API's resolve — and once in headless
Chromium: what each role reads, the search and the filters, 422s naming the field, the CSV's
rows across pages, a draft published (and one rejected) from the page through the service and
audited, a POST without the CSRF token refused."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from server.base import users
from server.base.users import Principal
from server.db.models import Article, AuditEntry, Device, Incident, Role
from server.db.types import utcnow
from server.knowledge import service as knowledge_service
from server.runtime import Runtime
from server.web.pages.knowledge_page import CSV_HEADER
from tests.support.server import V1, bearer, create_token
from tests.web.seed import PASSWORD, Seeded
from tests.web.support import Console, sign_in, token_for
from tests.web.test_browser import CHROMIUM, browser, live, screenshot, shots, signed_in  # noqa: F401

ROW = re.compile(r'<tr data-article="(\d+)" data-used="(\d+)" data-worked="(\d+)"')
DRAFT = re.compile(r'<article data-draft="(\d+)"')


async def as_user(runtime: Runtime, name: str) -> Principal:
    """The principal behind ``name`` (the seed's users), for calling the services."""
    async with runtime.sessions() as session:
        return await users.authenticate(session, (await users.issue_token(session, name, actor="test")).token)


async def write(runtime: Runtime, who: Principal, *, publish: bool = True, **values: Any) -> int:
    """An article through the knowledge service: a draft, published unless ``publish=False``."""
    async with runtime.sessions() as session:
        article = await knowledge_service.create_article(session, who, values)
        if publish:
            await knowledge_service.publish(session, who, article.id)
        return article.id


async def incident_on(runtime: Runtime, device_id: str, symptom: str, code: str) -> int:
    async with runtime.sessions() as session:
        now = utcnow()
        incident = Incident(device_id=device_id, kind="fault", fault_code=code, codes=[code], severity="error",
                            effect="down", t_fault=now, t_detect=now, symptom=symptom, episodes=[])  # fmt: skip
        session.add(incident)
        await session.commit()
        return incident.id


def listed(html: str) -> list[int]:
    return [int(row[0]) for row in ROW.findall(html)]


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def kb_setup(console: Console) -> dict[str, Any]:
    """tina writes a customer-safe jam article (used twice, worked once, suggested once), a
    how-to for any model, and leaves a draft for review."""
    runtime = console.runtime
    tina = await as_user(runtime, "tina")
    device_id = console.seeded.devices[console.seeded.customers[0]][0]
    async with runtime.sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        model = device.model
    assert model is not None
    jam = await write(
        runtime,
        tina,
        title="Paper jam in tray 2",
        symptom="paper jams in tray 2 when printing duplex",
        cause="worn pickup roller",
        resolution="open tray 2\n- remove the sheet\n- clean the roller",
        actions=[{"action": "printer.clear_jam", "args": {"tray": 2}}],
        models=[model],
        fault_codes=["E-JAM-2"],
        customer_safe=True,
    )
    howto = await write(
        runtime,
        tina,
        title="Replace the toner",
        type="how-to",
        symptom="toner low warning",
        fault_codes=["E-TN"],
    )
    draft = await write(runtime, tina, publish=False, title="Fuser overheats", symptom="fuser too hot, smell")
    token = bearer(await token_for(console, "tina"))
    for fixed in (True, False):  # used on two incidents: its fix held once
        incident = await incident_on(runtime, device_id, "paper jam tray 2", "E-JAM-2")
        resolved = await console.client.post(
            f"{V1}/incidents/{incident}/resolve",
            json={
                "channel": "remote",
                "cause": "paper jam in tray 2",
                "resolution": "cleared the paper jam",
                "article_id": jam,
                "article_fixed": fixed,
            },
            headers=token,
        )
        assert resolved.status_code == 200, resolved.text
    open_one = await incident_on(runtime, device_id, "paper jam again", "E-JAM-2")
    shown = await console.client.get(f"{V1}/incidents/{open_one}/suggestions", headers=token)
    assert [s["article_id"] for s in shown.json()][:1] == [jam]  # recorded as suggested once
    return {"jam": jam, "howto": howto, "draft": draft, "model": model, "resolved": incident}


@pytest.fixture
async def kb(console: Console) -> dict[str, Any]:
    return await kb_setup(console)


async def test_each_role_reads_its_articles_and_reviewers_get_the_drafts(
    console: Console, kb: dict[str, Any]
) -> None:
    await sign_in(console.client, "olga")
    page = await console.client.get("/knowledge")
    assert page.status_code == 200, page.text
    assert 'data-nav="knowledge"' in page.text
    # most successful first; the counters are the service's
    assert ROW.findall(page.text) == [(str(kb["jam"]), "2", "1"), (str(kb["howto"]), "0", "0")]
    assert re.search(r'class="num worked">1 of 2<br><small>50 %', page.text)
    assert re.search(rf'data-article="{kb["jam"]}".*?<td class="num suggested">1</td>', page.text, re.S)
    assert "worn pickup roller" in page.text  # cause and resolution inline, in <details>
    assert "<li>clean the roller</li>" in page.text
    assert 'id="drafts"' not in page.text  # ops reads, does not review
    async with console.runtime.sessions() as session:
        articles = list(
            await session.scalars(select(Article).where(Article.id.in_([kb["jam"], kb["howto"]])))
        )
    assert {(a.use_count, a.success_count) for a in articles} == {(2, 1), (0, 0)}

    await sign_in(console.client, "tina")
    page = await console.client.get("/knowledge")
    assert [int(d) for d in DRAFT.findall(page.text)] == [kb["draft"]]
    assert f'action="/knowledge/articles/{kb["draft"]}/publish"' in page.text
    assert f'action="/knowledge/articles/{kb["draft"]}/reject"' in page.text
    assert kb["draft"] not in listed(page.text)

    await sign_in(console.client, "carl")  # a customer: published customer-safe ones, no staff figures
    page = await console.client.get("/knowledge")
    assert page.status_code == 200
    assert listed(page.text) == [kb["jam"]]
    assert "Suggested for" not in page.text
    assert 'id="drafts"' not in page.text
    rows = csv_rows((await console.client.get("/knowledge.csv")).text)
    assert [r[0] for r in rows[1:]] == [str(kb["jam"])]
    assert rows[1][CSV_HEADER.index("suggested_for")] == ""

    await create_token(console.runtime, "pia", Role.PROVISIONING, password=PASSWORD)
    await sign_in(console.client, "pia")  # provisioning has no READ_KNOWLEDGE
    refused = await console.client.get("/knowledge")
    assert refused.status_code == 403
    assert "customer" in refused.text
    assert (await console.client.get("/knowledge.csv")).status_code == 403


async def test_search_and_filters_narrow_the_articles(console: Console, kb: dict[str, Any]) -> None:
    await sign_in(console.client, "olga")

    async def ids(**params: str) -> list[int]:
        page = await console.client.get("/knowledge", params=params)
        assert page.status_code == 200, page.text
        return listed(page.text)

    found = await console.client.get("/knowledge", params={"q": "paper jam"})
    assert listed(found.text) == [kb["jam"]]
    assert f'data-incident="{kb["resolved"]}"' in found.text  # past incidents the search found
    assert await ids(q="toner") == [kb["howto"]]
    assert await ids(q="nothing-like-it") == []
    assert await ids(type="how-to") == [kb["howto"]]
    assert await ids(fault="E-JAM-2") == [kb["jam"]]
    assert await ids(model=kb["model"]) == [kb["jam"], kb["howto"]]  # its model's, and any model's
    assert await ids(q="paper jam", type="how-to") == []


@pytest.mark.parametrize(
    ("query", "field"), [("type=story", "type"), (f"q={'x' * 1001}", "q"), ("search=jam", "search")]
)
async def test_a_bad_filter_value_is_a_422_naming_the_field(console: Console, query: str, field: str) -> None:
    await sign_in(console.client, "olga")
    for path in ("/knowledge", "/knowledge.csv"):
        answer = await console.client.get(f"{path}?{query}")
        assert answer.status_code == 422, (path, answer.text[:300])
        assert f"{field}:" in answer.text
    assert (await console.client.get("/knowledge?page=two")).status_code == 422


async def test_the_csv_holds_every_page_the_filter_selects(console: Console) -> None:
    tina = await as_user(console.runtime, "tina")
    made = [
        await write(console.runtime, tina, title=f"Note {n}", symptom=f"case {n}", fault_codes=["E-MANY"])
        for n in range(53)
    ]
    other = await write(console.runtime, tina, title="=SUM(A1)", symptom="other", fault_codes=["E-ONE"])
    await sign_in(console.client, "olga")
    first = await console.client.get("/knowledge", params={"fault": "E-MANY"})
    assert 'id="articles-total">53<' in first.text
    assert "page 1 of 2" in first.text
    second = await console.client.get("/knowledge", params={"fault": "E-MANY", "page": "2"})
    on_pages = listed(first.text) + listed(second.text)
    assert len(listed(first.text)) == 50
    assert sorted(on_pages) == made
    export = await console.client.get("/knowledge.csv", params={"fault": "E-MANY"})
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert export.headers["content-disposition"].startswith("attachment")
    rows = csv_rows(export.text)
    assert tuple(rows[0]) == CSV_HEADER
    assert [int(r[0]) for r in rows[1:]] == on_pages  # every page, in the page's order
    assert {r[CSV_HEADER.index("fault_codes")] for r in rows[1:]} == {"E-MANY"}
    assert {r[CSV_HEADER.index("success_rate")] for r in rows[1:]} == {""}  # never used: no rate
    everything = csv_rows((await console.client.get("/knowledge.csv")).text)
    assert len(everything) == 1 + 54
    (formula,) = [r for r in everything if r[0] == str(other)]
    assert formula[1] == "'=SUM(A1)"


async def test_a_draft_approved_on_the_page_is_published_and_audited(
    console: Console, kb: dict[str, Any]
) -> None:
    tina = await as_user(console.runtime, "tina")
    second = await write(console.runtime, tina, publish=False, title="Cracked drum", symptom="streaks")
    csrf = await sign_in(console.client, "tina")
    url = f"/knowledge/articles/{kb['draft']}/publish"
    stale = await console.client.post(url, data={"back": ""})
    assert stale.status_code == 403
    assert "csrf" in stale.text
    async with console.runtime.sessions() as session:
        assert (await knowledge_service.get_article(session, tina, kb["draft"])).state == "draft"
    done = await console.client.post(url, data={"csrf": csrf, "back": "type=problem"})
    assert done.status_code == 200, done.text
    assert 'id="review-result"' in done.text
    assert kb["draft"] in listed(done.text)  # now among the published ones
    assert 'name="type"' in done.text
    assert 'value="problem" selected' in done.text  # the filters it was sent from
    again = await console.client.post(url, data={"csrf": csrf})
    assert again.status_code == 409
    rejected = await console.client.post(
        f"/knowledge/articles/{second}/reject", data={"csrf": csrf, "reason": "duplicate of the drum article"}
    )
    assert rejected.status_code == 200, rejected.text
    assert DRAFT.findall(rejected.text) == []
    published_again = await console.client.post(
        f"/knowledge/articles/{kb['jam']}/reject", data={"csrf": csrf}
    )
    assert published_again.status_code == 409  # only a draft is rejected here
    bad = await console.client.post(f"/knowledge/articles/{second}/approve", data={"csrf": csrf})
    assert bad.status_code == 422
    assert "decision:" in bad.text
    async with console.runtime.sessions() as session:
        assert (await knowledge_service.get_article(session, tina, kb["draft"])).state == "published"
        assert (await knowledge_service.get_article(session, tina, second)).state == "retired"
        trail = list(
            await session.execute(
                select(AuditEntry.actor, AuditEntry.action, AuditEntry.target, AuditEntry.detail).where(
                    AuditEntry.target.in_([f"article:{kb['draft']}", f"article:{second}"]),
                    AuditEntry.action.in_(["article.published", "article.retired"]),
                )
            )
        )
    assert sorted((a, t) for _, a, t, _ in trail) == [
        ("article.published", f"article:{kb['draft']}"),
        ("article.retired", f"article:{second}"),
    ]
    assert {actor for actor, *_ in trail} == {"user:tina"}
    assert [d for _, a, _, d in trail if a == "article.retired"] == [
        {"reason": "duplicate of the drum article"}
    ]

    ops_csrf = await sign_in(console.client, "olga")  # ops reads but may not review
    refused = await console.client.post(f"/knowledge/articles/{second}/publish", data={"csrf": ops_csrf})
    assert refused.status_code == 403


@pytest.mark.integration
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
async def test_the_knowledge_page_in_a_browser(
    live: tuple[str, Seeded, Runtime],  # noqa: F811
    browser: object,  # noqa: F811
    shots: list[Path],  # noqa: F811
) -> None:
    base_url, _, runtime = live
    tina = await as_user(runtime, "tina")
    jam = await write(
        runtime, tina, title="Paper jam in tray 2", symptom="paper jams in tray 2", cause="roller"
    )
    toner = await write(runtime, tina, title="Replace the toner", symptom="toner low warning")
    draft = await write(runtime, tina, publish=False, title="Fuser overheats", symptom="fuser too hot")
    page: Any = await signed_in(browser, base_url, "tina")
    await page.get_by_role("link", name="Knowledge").click()
    await page.wait_for_url(f"{base_url}/knowledge")
    assert await page.locator("#articles-total").inner_text() == "2"
    await page.get_by_label("Search", exact=True).fill("paper jam")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_url(re.compile(r".*q=paper\+jam.*"))
    rows = await page.locator("#articles tr[data-article]").evaluate_all(
        "rows => rows.map(r => r.dataset.article)"
    )
    assert rows == [str(jam)]
    assert str(toner) not in rows
    await page.locator(f'tr[data-article="{jam}"] summary').click()
    await page.get_by_text("roller").wait_for()
    await screenshot(page, shots, "knowledge-search", full=True)
    await page.get_by_role("button", name=f"Publish article {draft}").click()
    await page.locator("#review-result").wait_for()
    assert await page.locator("#drafts-total").inner_text() == "0"
