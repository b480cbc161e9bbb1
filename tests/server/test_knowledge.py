"""The knowledge base on SQLite and PostgreSQL: capture on resolve (link vs draft, reopen takes
the success back), ranking of suggestions, retired articles, what customers see, search
(server/knowledge)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

import protocol
from server.base import users
from server.base.users import Principal
from server.db.models import (
    Article,
    ArticleLink,
    Channel,
    Command,
    Customer,
    Device,
    Incident,
    IncidentEntry,
    RemoteSession,
    Role,
    TechnicianAssignment,
    TelemetrySample,
)
from server.errors import InvalidInput, NotFound
from server.guides import service as guides
from server.incidents import service as incidents
from server.knowledge import service, suggest
from tests.server.incident_factory import Sessions, at

ADMIN = Principal(user_id=1, name="root", role=Role.ADMIN)


async def _world(sessions: Sessions, prefix: str) -> tuple[Principal, Principal]:
    """Devices ``<prefix>-lx`` (LX-9, firmware 2.1) and ``<prefix>-ot`` (OT-1) of one customer;
    its technician and a customer user."""
    async with sessions() as session:
        customer = Customer(name=f"c-{prefix}")
        session.add(customer)
        await session.flush()
        session.add_all(
            [
                Device(id=f"{prefix}-lx", model="LX-9", firmware="2.1", customer_id=customer.id),
                Device(id=f"{prefix}-ot", model="OT-1", firmware="1.0", customer_id=customer.id),
            ]
        )
        tech = await users.create_user(session, f"t-{prefix}", Role.TECHNICIAN, actor="test")
        session.add(TechnicianAssignment(user_id=tech.id, customer_id=customer.id))
        await session.commit()
        return (
            Principal(user_id=tech.id, name=tech.name, role=Role.TECHNICIAN),
            Principal(user_id=9001, name="carla", role=Role.CUSTOMER, customer_id=customer.id),
        )


async def _incident(
    sessions: Sessions, device_id: str, code: str = "E1", symptom: str = "", when: float = 0
) -> int:
    async with sessions() as session:
        incident = Incident(
            device_id=device_id, kind="fault", fault_code=code, codes=[code], severity="error",
            effect="down", t_fault=at(when), t_detect=at(when + 60), symptom=symptom, episodes=[],
        )  # fmt: skip
        session.add(incident)
        await session.commit()
        return incident.id


async def _article(sessions: Sessions, who: Principal, *, publish: bool = True, **values: Any) -> int:
    values = {"title": "A fix", "symptom": "it fails", **values}
    async with sessions() as session:
        article = await service.create_article(session, who, values)
        if publish:
            await service.publish(session, who, article.id)
        return article.id


async def _command(
    session: Any, device_id: str, action: str, state: str, *, session_id: str | None, at_s: float, **args: Any
) -> None:
    session.add(
        Command(
            id=f"cmd-{device_id}-{action}-{state}-{at_s}",
            device_id=device_id,
            action=action,
            args=args,
            issuer="t-cap",
            session_id=session_id,
            state=state,
            issued_at=at(at_s),
            expires_at=at(at_s + 60),
            deadline_at=at(at_s + 120),
            signed="x",
        )
    )


async def test_resolving_drafts_an_article_from_the_notes_and_the_sessions_successful_commands(
    sessions: Sessions,
) -> None:
    tech, _ = await _world(sessions, "cap")
    first = await _incident(sessions, "cap-lx", symptom="Paper jams in tray 2")
    async with sessions() as session:
        session.add(RemoteSession(id="ses_cap", device_id="cap-lx", incident_id=first, owner=tech.name,
                                  time_limit_s=600, created_at=at(100)))  # fmt: skip
        await session.flush()
        await _command(
            session, "cap-lx", "printer.clear_jam", "succeeded", session_id="ses_cap", at_s=110, tray=2
        )
        await _command(session, "cap-lx", "printer.reset", "failed", session_id="ses_cap", at_s=120)
        await _command(session, "cap-lx", sorted(protocol.CONTROL_ACTIONS)[0],
                       "succeeded", session_id="ses_cap", at_s=105)  # fmt: skip
        await _command(session, "cap-ot", "selftest", "succeeded", session_id=None, at_s=110)  # other device
        await session.commit()
        resolved = await incidents.resolve(
            session, first, tech, channel=Channel.REMOTE, cause="torn sheet in the path",
            resolution="- opened tray 2\n- cleared the jam remotely", draft_article=True,
        )  # fmt: skip
        assert resolved.status == "resolved"
    async with sessions() as session:
        article = await session.scalar(select(Article).where(Article.source_incident_id == first))
        assert article is not None
        assert (article.state, article.type, article.customer_safe) == ("draft", "problem", False)
        assert article.symptom == "Paper jams in tray 2"
        assert article.title == "E1: Paper jams in tray 2"
        assert (article.cause, article.models, article.fault_codes) == (
            "torn sheet in the path",
            ["LX-9"],
            ["E1"],
        )
        assert (article.firmware_min, article.firmware_max) == ("2.1", "2.1")
        assert article.actions == [{"action": "printer.clear_jam", "args": {"tray": 2}}]
        assert (article.use_count, article.reuse_count, article.success_count) == (1, 0, 1)
        (link,) = await session.scalars(select(ArticleLink).where(ArticleLink.article_id == article.id))
        assert (link.incident_id, link.kind, link.fixed) == (first, "drafted", True)
        kinds = list(
            await session.scalars(select(IncidentEntry.kind).where(IncidentEntry.incident_id == first))
        )
        assert "knowledge.drafted" in kinds


async def test_resolving_links_an_article_and_a_reopen_takes_the_success_back(sessions: Sessions) -> None:
    tech, _ = await _world(sessions, "lnk")
    article_id = await _article(sessions, tech, title="Clear the jam", fault_codes=["E1"], models=["LX-9"])
    retired = await _article(sessions, tech, title="Old fix", fault_codes=["E1"])
    fixed, not_fixed = await _incident(sessions, "lnk-lx"), await _incident(sessions, "lnk-lx", when=5000)
    async with sessions() as session:
        await service.retire(session, tech, retired)
        common: dict[str, Any] = {"channel": Channel.REMOTE, "cause": "jam", "resolution": "cleared"}
        with pytest.raises(InvalidInput) as both:
            await incidents.resolve(session, fixed, tech, article_id=article_id, draft_article=True, **common)
        assert both.value.field == "draft_article"
    async with sessions() as session:
        with pytest.raises(InvalidInput) as gone:
            await incidents.resolve(session, fixed, tech, article_id=retired, **common)
        assert gone.value.field == "article_id"
    async with sessions() as session:
        assert (await incidents.get_incident(session, fixed)).status == "open"  # nothing was committed
        await incidents.resolve(session, fixed, tech, article_id=article_id, **common)
        await incidents.resolve(
            session, not_fixed, tech, article_id=article_id, article_fixed=False, **common
        )
    async with sessions() as session:
        article = await session.get(Article, article_id)
        assert article is not None
        assert (article.use_count, article.reuse_count, article.success_count) == (2, 2, 1)
        await incidents.reopen(session, fixed, tech, reason="jammed again")
    async with sessions() as session:
        article = await session.get(Article, article_id)
        assert article is not None
        assert (article.use_count, article.success_count) == (2, 0)
        link = await session.scalar(select(ArticleLink).where(ArticleLink.incident_id == fixed))
        assert link is not None
        assert link.fixed is False
        await incidents.resolve(session, fixed, tech, article_id=article_id, **common)  # fixed the 2nd time
    async with sessions() as session:
        article = await session.get(Article, article_id)
        assert article is not None
        assert (article.use_count, article.success_count) == (2, 1)  # one use per incident


async def test_same_fault_code_on_another_model_ranks_below_the_same_model_and_retired_never_shows(
    sessions: Sessions,
) -> None:
    tech, _ = await _world(sessions, "rk")
    same = await _article(sessions, tech, title="Same model", models=["LX-9"], fault_codes=["E1"])
    other = await _article(sessions, tech, title="Other model", models=["OT-1"], fault_codes=["E1"])
    anymodel = await _article(sessions, tech, title="Any model", fault_codes=["E1"])
    text_only = await _article(sessions, tech, title="Paper jam", symptom="paper jams in tray", models=["LX-9"],
                               fault_codes=["E9"])  # fmt: skip
    retired = await _article(sessions, tech, title="Retired", models=["LX-9"], fault_codes=["E1"])
    draft = await _article(sessions, tech, title="Draft", models=["LX-9"], fault_codes=["E1"], publish=False)
    await _article(sessions, tech, title="Unrelated", models=["OT-1"], fault_codes=["E7"])
    incident = await _incident(sessions, "rk-lx", symptom="paper jams")
    async with sessions() as session:
        before = await suggest.suggestions(session, tech, incident, limit=10)
        assert retired in [s.article_id for s in before]
        await service.retire(session, tech, retired)
        found = await suggest.suggestions(session, tech, incident, limit=10)
    assert [s.article_id for s in found] == [same, anymodel, other, text_only]
    assert draft not in [s.article_id for s in found]
    assert retired not in [s.article_id for s in found]
    assert found[0].why.startswith("same model and fault code E1")
    assert "on another model (OT-1)" in found[2].why
    assert "symptom similarity" in found[3].why
    async with sessions() as session:
        assert [s.article_id for s in await suggest.suggestions(session, tech, incident, limit=2)] == [
            same,
            anymodel,
        ]


async def test_success_feedback_changes_the_ranking(sessions: Sessions) -> None:
    tech, _ = await _world(sessions, "fb")
    first = await _article(sessions, tech, title="Reseat the fuser", models=["LX-9"], fault_codes=["E1"])
    second = await _article(sessions, tech, title="Replace the fuser", models=["LX-9"], fault_codes=["E1"])
    target = await _incident(sessions, "fb-lx", when=90000)
    async with sessions() as session:
        assert [s.article_id for s in await suggest.suggestions(session, tech, target)] == [first, second]
    for n in range(3):  # the second article fixes three incidents; the first fails once
        done = await _incident(sessions, "fb-lx", when=1000 * n)
        async with sessions() as session:
            await incidents.resolve(session, done, tech, channel=Channel.REMOTE, cause="c", resolution="r",
                                    article_id=second)  # fmt: skip
    failed = await _incident(sessions, "fb-lx", when=5000)
    async with sessions() as session:
        await incidents.resolve(session, failed, tech, channel=Channel.REMOTE, cause="c", resolution="r",
                                article_id=first, article_fixed=False)  # fmt: skip
    async with sessions() as session:
        ranked = await suggest.suggestions(session, tech, target)
    assert [s.article_id for s in ranked] == [second, first]
    assert "3 of 3 successes" in ranked[0].why
    assert "0 of 1 successes" in ranked[1].why
    assert ranked[0].success_rate == pytest.approx(4 / 5)
    assert ranked[1].success_rate == pytest.approx(1 / 3, abs=1e-3)


async def test_the_telemetry_signature_ranks_the_article_whose_incidents_looked_alike(
    sessions: Sessions,
) -> None:
    tech, _ = await _world(sessions, "sig")
    hot = await _article(sessions, tech, title="Fuser overheats", models=["LX-9"], fault_codes=["E1"])
    cold = await _article(sessions, tech, title="Low pressure", models=["LX-9"], fault_codes=["E1"])
    incident = await _incident(sessions, "sig-lx", when=86400)
    async with sessions() as session:  # the device's own normal: 60 °C ± 1; 95 °C just before the fault
        for i in range(48):
            session.add(
                TelemetrySample(device_id="sig-lx", metric="fuser_c", ts=at(1800 * i), value=60 + (i % 3 - 1))
            )
            session.add(TelemetrySample(device_id="sig-lx", metric="pressure", ts=at(1800 * i), value=2.0))
        for s in (86400 - 600, 86400 - 300, 86400):
            session.add(TelemetrySample(device_id="sig-lx", metric="fuser_c", ts=at(s), value=95.0))
            session.add(TelemetrySample(device_id="sig-lx", metric="pressure", ts=at(s), value=2.0))
        hot_article, cold_article = await session.get(Article, hot), await session.get(Article, cold)
        assert hot_article is not None
        assert cold_article is not None
        hot_article.signature, cold_article.signature = {"fuser_c": 6.0}, {"pressure": -5.0}
        hot_article.updated_at = cold_article.updated_at = at(0) + timedelta(days=400)
        await session.commit()
        ranked = await suggest.suggestions(session, tech, incident)
    assert [s.article_id for s in ranked] == [hot, cold]
    assert ranked[0].signature_similarity == pytest.approx(1.0)
    assert "fuser_c high" in ranked[0].why
    assert ranked[1].signature_similarity == 0


async def test_customers_see_only_published_customer_safe_articles_and_they_become_guides(
    sessions: Sessions,
) -> None:
    tech, carla = await _world(sessions, "cs")
    safe = await _article(sessions, tech, title="Clear tray 2", symptom="paper jam in tray 2", models=["LX-9"],
                          fault_codes=["E1"], customer_safe=True, resolution="- open tray 2\n- remove the sheet",
                          actions=[{"action": "selftest", "args": {}}])  # fmt: skip
    internal = await _article(sessions, tech, title="Reset the controller", symptom="paper jam, controller",
                              fault_codes=["E1"])  # fmt: skip
    draft = await _article(sessions, tech, title="Draft jam", symptom="paper jam", fault_codes=["E1"],
                           customer_safe=True, publish=False)  # fmt: skip
    incident = await _incident(sessions, "cs-lx")
    async with sessions() as session:
        listed, total = await service.list_articles(session, carla, service.ArticleFilter())
        assert ([a.id for a in listed], total) == ([safe], 1)
        for hidden in (internal, draft):
            with pytest.raises(NotFound):
                await service.get_article(session, carla, hidden)
        assert (await service.get_article(session, carla, safe)).id == safe
        hits = await suggest.search(session, carla, "paper jam")
        assert [(h.kind, h.id) for h in hits] == [("article", safe)]
        staff_hits = await suggest.search(session, tech, "paper jam")
        assert {h.id for h in staff_hits if h.kind == "article"} == {safe, internal}
        offered = await guides.incident_guides(session, carla, incident)
        assert [g["source"] for g in offered] == [f"article:{safe}"]
        assert [s["text"] for s in offered[0]["steps"]] == ["open tray 2", "remove the sheet", "Run selftest"]
        assert offered[0]["origin"].startswith(f"knowledge base article #{safe}")
        await service.retire(session, tech, safe)
        assert await guides.incident_guides(session, carla, incident) == []


async def test_search_finds_past_incidents_in_scope_by_their_notes(sessions: Sessions) -> None:
    tech, carla = await _world(sessions, "se")
    other_tech, _ = await _world(sessions, "se2")
    past = await _incident(sessions, "se-lx")
    async with sessions() as session:
        await incidents.resolve(session, past, tech, channel=Channel.FIELD, cause="worn drive belt",
                                resolution="replaced the drive belt")  # fmt: skip
        hits = await suggest.search(session, tech, "belt worn out")
        assert [(h.kind, h.id) for h in hits] == [("incident", past)]
        assert hits[0].snippet == "replaced the drive belt"
        assert [h.id for h in await suggest.search(session, carla, "drive belt")] == [past]
        assert await suggest.search(session, other_tech, "drive belt") == []  # another customer's
        assert await suggest.search(session, tech, "the and of") == []  # nothing to look for
