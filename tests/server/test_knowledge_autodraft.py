"""The knowledge base fills itself (issue 15, item 5): resolving an incident with a new fix
drafts an article for review without anyone asking; a fix the knowledge base already holds, a
resolution without notes, one that cleared itself, and an explicit ``draft_article=false`` do not."""

from __future__ import annotations

from sqlalchemy import func, select

from server.db.models import Article, AuditEntry, Channel
from server.incidents import service as incidents
from tests.server.incident_factory import Sessions
from tests.server.test_knowledge import _article, _incident, _world


async def _drafts(sessions: Sessions) -> list[Article]:
    async with sessions() as session:
        return list(
            await session.scalars(select(Article).where(Article.state == "draft").order_by(Article.id))
        )


async def _resolve(sessions: Sessions, incident_id: int, who: object, **how: object) -> None:
    values = {
        "channel": Channel.FIELD,
        "cause": "worn roller",
        "resolution": "replaced the pickup roller",
        **how,
    }
    async with sessions() as session:
        await incidents.resolve(session, incident_id, who, **values)  # type: ignore[arg-type]


async def test_a_new_fix_drafts_an_article_by_itself_and_only_once(sessions: Sessions) -> None:
    tech, _ = await _world(sessions, "auto")
    first = await _incident(sessions, "auto-lx", code="E77", symptom="Feeds two sheets at once")
    await _resolve(sessions, first, tech)
    (draft,) = await _drafts(sessions)
    assert (draft.source_incident_id, draft.fault_codes, draft.models) == (first, ["E77"], ["LX-9"])
    assert draft.resolution == "replaced the pickup roller"
    async with sessions() as session:
        detail = await session.scalar(
            select(AuditEntry.detail).where(
                AuditEntry.action == "article.drafted", AuditEntry.target == f"article:{draft.id}"
            )
        )
    assert detail is not None
    assert detail["automatic"] is True
    again = await _incident(sessions, "auto-lx", code="E77", when=3600)
    await _resolve(sessions, again, tech)  # the draft covers E77 on LX-9 now
    other_model = await _incident(sessions, "auto-ot", code="E77", when=7200)
    await _resolve(sessions, other_model, tech)  # the draft is for LX-9: OT-1's fix is new
    assert [d.source_incident_id for d in await _drafts(sessions)] == [first, other_model]


async def test_no_draft_without_a_new_fix_or_when_told_not_to(sessions: Sessions) -> None:
    tech, _ = await _world(sessions, "none")
    covered = await _article(sessions, tech, fault_codes=["E5"])  # any model
    cases = [
        ({"channel": Channel.FIELD}, "E5"),  # an article covers E5 already
        ({"channel": Channel.FIELD, "resolution": ""}, "E6"),  # no notes: nothing to write down
        ({"channel": Channel.AUTO}, "E7"),  # it cleared itself: no fix to learn
        ({"channel": Channel.REMOTE, "draft_article": False}, "E8"),  # told not to
    ]
    for n, (how, code) in enumerate(cases):
        incident_id = await _incident(sessions, "none-lx", code=code, when=1000.0 * n)
        await _resolve(sessions, incident_id, tech, **how)
    assert await _drafts(sessions) == []
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Article)) == 1
        assert (await session.get(Article, covered)) is not None
