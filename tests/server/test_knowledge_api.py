"""The knowledge API over HTTP (in-process app, SQLite and PostgreSQL): article life cycle,
capture through the resolve body, suggestions, and sending a suggested remote action into the
technician's session in one step; ``fleetcare kb search`` against a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from certs import PkiDir
from client.kb_cli import app as kb_cli
from server.db.models import Article, Command, Device, Incident, IncidentEntry, Role
from server.db.types import utcnow
from tests.support.databases import sqlite_url
from tests.support.server import V1, api_client, bearer, create_token, running_server, server_settings

CATALOGUE = [{"name": n, "policy": "allowed"} for n in ("printer.clear_jam", "selftest")]
ARTICLE = {
    "title": "Paper jam in tray 2",
    "symptom": "The printer stops and says paper jam",
    "cause": "a torn sheet",
    "resolution": "- open tray 2\n- clear the jam remotely",
    "actions": [{"action": "printer.clear_jam", "args": {"tray": 2}}, {"action": "selftest"}],
    "models": ["LX-9"],
    "fault_codes": ["E1"],
    "customer_safe": False,
}


async def _incident(runtime: Any, device_id: str) -> int:
    async with runtime.sessions() as session:
        now = utcnow()
        incident = Incident(device_id=device_id, kind="fault", fault_code="E1", codes=["E1"], severity="error",
                            effect="down", t_fault=now, t_detect=now, symptom="paper jam", episodes=[])  # fmt: skip
        session.add(incident)
        await session.commit()
        return incident.id


@pytest.fixture
async def app(db_url: str, pki: PkiDir) -> Any:
    async with api_client(server_settings(db_url, pki=pki)) as (client, runtime):
        async with runtime.sessions() as session:
            for device_id in ("kb-1", "kb-2"):
                session.add(Device(id=device_id, first_seen=utcnow(), model="LX-9",
                                   inventory={"agent": {"version": "1", "catalogue": CATALOGUE}}))  # fmt: skip
            await session.commit()
        tech = bearer(await create_token(runtime, "tina", Role.TECHNICIAN))
        ops = bearer(await create_token(runtime, "oscar", Role.OPS))
        yield client, runtime, tech, ops


async def test_article_life_cycle_and_suggestions_over_http(app: Any) -> None:
    client, runtime, tech, ops = app
    created = await client.post(f"{V1}/knowledge/articles", json=ARTICLE, headers=tech)
    assert created.status_code == 201, created.text
    article = created.json()
    assert (article["state"], article["links"]) == ("draft", [])
    assert (await client.post(f"{V1}/knowledge/articles", json=ARTICLE, headers=ops)).status_code == 403
    bad = await client.post(f"{V1}/knowledge/articles", json={**ARTICLE, "type": "story"}, headers=tech)
    assert bad.status_code == 422
    assert "type" in bad.text
    incident = await _incident(runtime, "kb-1")
    url = f"{V1}/incidents/{incident}/suggestions"
    assert (await client.get(url, headers=ops)).json() == []  # a draft is not suggested
    published = await client.post(f"{V1}/knowledge/articles/{article['id']}/publish", headers=tech)
    assert published.json()["state"] == "published"
    again = await client.post(f"{V1}/knowledge/articles/{article['id']}/publish", headers=tech)
    assert again.status_code == 409
    (suggestion,) = (await client.get(url, headers=ops)).json()
    assert suggestion["article_id"] == article["id"]
    assert suggestion["why"].startswith("same model and fault code E1")
    assert suggestion["actions"][0] == {"action": "printer.clear_jam", "args": {"tray": 2}}
    edited = await client.patch(f"{V1}/knowledge/articles/{article['id']}", json={"models": []}, headers=tech)
    assert edited.json()["models"] == []
    (suggestion,) = (await client.get(url, headers=ops)).json()  # the index saw the edit
    assert suggestion["tier"] == 3
    resolved = await client.post(
        f"{V1}/incidents/{incident}/resolve",
        json={"channel": "remote", "cause": "jam", "resolution": "cleared", "article_id": article["id"]},
        headers=tech,
    )
    assert resolved.status_code == 200, resolved.text
    assert "knowledge.linked" in [e["kind"] for e in resolved.json()["timeline"]]
    detail = (await client.get(f"{V1}/knowledge/articles/{article['id']}", headers=ops)).json()
    assert (detail["use_count"], detail["reuse_count"], detail["success_count"]) == (1, 1, 1)
    assert [link["incident_id"] for link in detail["links"]] == [incident]
    retired = await client.post(f"{V1}/knowledge/articles/{article['id']}/retire", json={}, headers=tech)
    assert retired.json()["state"] == "retired"
    assert (await client.get(f"{V1}/incidents/{await _incident(runtime, 'kb-1')}/suggestions",
                             headers=ops)).json() == []  # fmt: skip


async def test_a_suggested_action_is_sent_into_the_session_in_one_step(app: Any) -> None:
    client, runtime, tech, _ops = app
    article = (await client.post(f"{V1}/knowledge/articles", json=ARTICLE, headers=tech)).json()
    await client.post(f"{V1}/knowledge/articles/{article['id']}/publish", headers=tech)
    incident = await _incident(runtime, "kb-1")
    opened = await client.post(
        f"{V1}/sessions", json={"device_id": "kb-1", "incident_id": incident}, headers=tech
    )
    elsewhere = await client.post(f"{V1}/sessions", json={"device_id": "kb-2"}, headers=tech)
    assert opened.json()["state"] == "active", opened.text
    url = f"{V1}/incidents/{incident}/suggestions/{article['id']}/apply"
    wrong = await client.post(url, json={"session_id": elsewhere.json()["id"]}, headers=tech)
    assert wrong.status_code == 422
    assert wrong.json()["error"]["field"] == "session_id"
    sent = await client.post(url, json={"session_id": opened.json()["id"]}, headers=tech)
    assert sent.status_code == 201, sent.text
    assert (sent.json()["action"], sent.json()["args"]) == ("printer.clear_jam", {"tray": 2})
    second = await client.post(url, json={"session_id": opened.json()["id"], "action_index": 1}, headers=tech)
    assert second.json()["action"] == "selftest"
    beyond = await client.post(url, json={"session_id": opened.json()["id"], "action_index": 2}, headers=tech)
    assert beyond.status_code == 422
    assert beyond.json()["error"]["field"] == "action_index"
    async with runtime.sessions() as session:
        command = await session.get(Command, sent.json()["id"])
        assert command is not None
        assert (command.device_id, command.session_id, command.issuer) == (
            "kb-1",
            opened.json()["id"],
            "tina",
        )
        stored = await session.get(Article, article["id"])
        assert stored is not None
        assert stored.apply_count == 2
        kinds = list(
            await session.scalars(select(IncidentEntry.kind).where(IncidentEntry.incident_id == incident))
        )
        assert kinds.count("knowledge.applied") == 2


async def test_resolve_body_drafts_an_article_and_customers_read_only_customer_safe_ones(app: Any) -> None:
    client, runtime, tech, _ops = app
    async with runtime.sessions() as session:
        from server import customers  # noqa: PLC0415

        customer = await customers.create_customer(session, name="kb-customer", actor="test")
        device = await session.get(Device, "kb-1")
        assert device is not None
        device.customer_id = customer.id
        await session.commit()
    carla = bearer(await create_token(runtime, "carla", Role.CUSTOMER, customer=customer.id))
    tech = bearer(await create_token(runtime, "theo", Role.TECHNICIAN, assign=[customer.id]))
    incident = await _incident(runtime, "kb-1")
    resolved = await client.post(
        f"{V1}/incidents/{incident}/resolve",
        json={"channel": "remote", "cause": "jam", "resolution": "cleared", "draft_article": True},
        headers=tech,
    )
    assert resolved.status_code == 200, resolved.text
    drafts = (await client.get(f"{V1}/knowledge/articles", params={"state": "draft"}, headers=tech)).json()
    (draft,) = drafts["items"]
    assert (draft["source_incident_id"], draft["fault_codes"]) == (incident, ["E1"])
    safe = (await client.post(f"{V1}/knowledge/articles", json={**ARTICLE, "customer_safe": True},
                              headers=tech)).json()  # fmt: skip
    await client.post(f"{V1}/knowledge/articles/{safe['id']}/publish", headers=tech)
    await client.post(f"{V1}/knowledge/articles/{draft['id']}/publish", headers=tech)
    seen = (await client.get(f"{V1}/knowledge/articles", headers=carla)).json()
    assert [a["id"] for a in seen["items"]] == [safe["id"]]
    assert seen["items"][0]["links"] is None
    assert seen["items"][0]["source_incident_id"] is None
    hidden = await client.get(f"{V1}/knowledge/articles/{draft['id']}", headers=carla)
    assert hidden.status_code == 404
    guides = (
        await client.get(f"{V1}/incidents/{await _incident(runtime, 'kb-1')}/guides", headers=carla)
    ).json()
    assert [g["source"] for g in guides] == [f"article:{safe['id']}"]
    found = (await client.get(f"{V1}/knowledge/search", params={"q": "paper jam"}, headers=carla)).json()
    assert {(h["kind"], h["id"]) for h in found} == {
        ("article", safe["id"]),
        ("incident", incident),
    }  # their own


async def test_kb_search_from_the_terminal(tmp_path: Path, pki: PkiDir) -> None:
    from server.db import run_migrations  # noqa: PLC0415

    url = sqlite_url(tmp_path / "kb.db")
    run_migrations(url)
    async with running_server(server_settings(url, pki=pki)) as (server, base):
        runtime = server.state.runtime
        token = await create_token(runtime, "tina", Role.TECHNICIAN)
        async with httpx.AsyncClient(base_url=base) as client:
            article = (
                await client.post(f"{V1}/knowledge/articles", json=ARTICLE, headers=bearer(token))
            ).json()
            await client.post(f"{V1}/knowledge/articles/{article['id']}/publish", headers=bearer(token))
        runner = CliRunner()

        def cli(*args: str, tok: str = token) -> tuple[int, str, str]:
            result = runner.invoke(kb_cli, [*args, "--url", base, "--token", tok])
            return result.exit_code, result.stdout, result.stderr

        code, out, _ = await asyncio.to_thread(cli, "search", "paper", "jam")
        assert code == 0
        first = out.splitlines()[0].split(maxsplit=3)
        assert first[1:] == ["article", str(article["id"]), "Paper jam in tray 2 [E1]"]
        assert float(first[0]) > 0
        code, out, _ = await asyncio.to_thread(cli, "search", "unheard", "words")
        assert (code, out) == (0, "")
        code, _, err = await asyncio.to_thread(cli, "search", "jam", tok="wrong")
        assert code == 1
        assert "error (401)" in err
