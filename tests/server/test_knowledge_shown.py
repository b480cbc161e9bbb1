"""What suggestions were shown is recorded (kb_suggestions_shown: best rank, first time shown,
only while the incident is unresolved) and becomes the KPI kb_suggestion_hit5, on SQLite and
PostgreSQL (server/knowledge/suggest.py, server/kpi)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from server.db.models import Channel, SuggestionShown
from server.db.types import utcnow
from server.incidents import service as incidents
from server.knowledge import suggest
from server.kpi import ReportSpec, compute_report, reference_report
from server.kpi.records import load_dataset
from tests.server.incident_factory import Sessions, at
from tests.server.test_knowledge import _article, _incident, _world


async def _shown(sessions: Sessions, incident_id: int) -> dict[int, tuple[int, object]]:
    async with sessions() as session:
        rows = await session.scalars(
            select(SuggestionShown).where(SuggestionShown.incident_id == incident_id)
        )
        return {row.article_id: (row.best_rank, row.first_shown_at) for row in rows}


async def test_shown_suggestions_keep_the_best_rank_and_the_first_time(sessions: Sessions) -> None:
    tech, _ = await _world(sessions, "shw")
    same_model = await _article(sessions, tech, title="Clear the jam", fault_codes=["E1"], models=["LX-9"])
    other = await _article(sessions, tech, title="Jam on OT", fault_codes=["E1"], models=["OT-1"])
    incident = await _incident(sessions, "shw-lx", symptom="paper jam")
    async with sessions() as session:
        served = await suggest.suggestions(session, tech, incident, limit=1)
    assert [s.article_id for s in served] == [same_model]
    first = await _shown(sessions, incident)
    assert list(first) == [same_model]
    assert first[same_model][0] == 1
    async with sessions() as session:
        served = await suggest.suggestions(session, tech, incident, limit=5)
    assert [s.article_id for s in served] == [same_model, other]  # same model above the other model
    again = await _shown(sessions, incident)
    assert again[same_model] == first[same_model]  # first time kept
    assert again[other][0] == 2
    async with sessions() as session:  # shown later at a better rank: the best rank is kept
        await suggest.record_shown(session, incident, [other, same_model])
        await suggest.record_shown(session, incident, [same_model, other])
    assert {a: rank for a, (rank, _) in (await _shown(sessions, incident)).items()} == {
        same_model: 1,
        other: 1,
    }


async def test_hit5_counts_a_working_fix_shown_before_the_resolution(sessions: Sessions) -> None:
    tech, customer = await _world(sessions, "hit")
    fix = await _article(sessions, tech, title="Clear the jam", fault_codes=["E1"], models=["LX-9"])
    hit, miss, unseen = (
        await _incident(sessions, "hit-lx", symptom="paper jam"),
        await _incident(sessions, "hit-lx", symptom="paper jam", when=600),
        await _incident(sessions, "hit-lx", symptom="paper jam", when=1200),
    )
    async with sessions() as session:
        for incident in (hit, miss):
            assert [s.article_id for s in await suggest.suggestions(session, tech, incident)] == [fix]
        common = {"channel": Channel.REMOTE, "cause": "jam", "resolution": "cleared"}
        await incidents.resolve(session, hit, tech, article_id=fix, **common)
        await incidents.resolve(session, miss, tech, article_id=fix, article_fixed=False, **common)
        await incidents.resolve(session, unseen, tech, article_id=fix, **common)
        # served after its resolution: not recorded, so it did not help resolve it
        assert await suggest.suggestions(session, tech, unseen)
    assert await _shown(sessions, unseen) == {}
    now = utcnow()
    spec = ReportSpec(at(-3600), now + timedelta(hours=1), customer=customer.customer_id, as_of=now)
    async with sessions() as session:
        report = await compute_report(session, spec)
        reference = reference_report(await load_dataset(session), spec)
    for values in (report.rows[0].values, reference.rows[0].values):
        assert values["resolved"] == 3
        assert (values["kb_shown"], values["kb_shown_hits5"], values["kb_suggestion_hit5"]) == (2, 1, 0.5)
