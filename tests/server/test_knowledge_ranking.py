"""Ranking rules found with benchmarks/kb_quality.py, on the pure :func:`suggest.rank`: an
article written from a customer's report (no fault code) learns the codes of the incidents it
fixed, ranks beside "the code on another model" before it has any, and between fixes for the
same fault, the one that worked more often comes first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from server.db.models import Article
from server.knowledge import index as kb_index
from server.knowledge import suggest

STAMP = (0, datetime(2026, 1, 1, tzinfo=UTC))


def _article(article_id: int, title: str, **kw: Any) -> Article:
    values: dict[str, Any] = {
        "symptom": title, "models": [], "fault_codes": [], "signature": {}, "actions": [],
        "type": "problem", "customer_safe": False, "use_count": 0, "success_count": 0,
    }  # fmt: skip
    values.update(kw)
    return Article(id=article_id, title=title, **values)


def _rank(idx: kb_index.ArticleIndex, codes: list[str], symptom: str) -> list[suggest.Suggestion]:
    return suggest.rank(idx, model="LX-9", firmware=None, codes=codes, signature={}, symptom=symptom, limit=5)


def test_an_article_without_a_code_ranks_beside_the_code_on_another_model_and_learns_codes() -> None:
    articles = [
        _article(1, "compressor stopped, water warm", models=["LX-9"]),  # from a customer's report
        _article(2, "paper jam", models=["OT-1"], fault_codes=["E01"]),
        _article(3, "display broken", models=["LX-9"], fault_codes=["E07"]),
    ]
    ranked = _rank(kb_index.ArticleIndex.build(articles, STAMP), ["E01"], "water warm, compressor stopped")
    assert [s.article_id for s in ranked] == [1, 2]  # same tier; 1 on evidence, 3 contradicts and no match
    assert ranked[0].tier == ranked[1].tier == 2
    assert ranked[0].why.startswith("same model, article without a fault code")
    assert ranked[1].why.startswith("fault code E01 on another model (OT-1)")

    learned = kb_index.ArticleIndex.build(articles, STAMP, {1: {"E01"}, 3: {"E07"}})
    ranked = _rank(learned, ["E01"], "nothing in common")
    assert [s.article_id for s in ranked][:1] == [1]
    assert ranked[0].tier == 4
    assert ranked[0].why.startswith("same model and fault code E01 (of incidents it fixed)")
    assert learned.entries[3].learned == frozenset()  # its own code: nothing learned
    assert 1 in learned.by_code["E01"]


def test_the_fix_that_worked_more_often_ranks_first_among_equals() -> None:
    articles = [
        _article(
            1, "reset the compressor", models=["LX-9"], fault_codes=["E01"], use_count=1, success_count=1
        ),
        _article(
            2, "reset the compressor", models=["LX-9"], fault_codes=["E01"], use_count=28, success_count=19
        ),
    ]
    ranked = _rank(kb_index.ArticleIndex.build(articles, STAMP), ["E01"], "compressor stopped")
    assert [s.article_id for s in ranked] == [2, 1]
    assert ranked[0].success_rate == ranked[1].success_rate  # 20/30 and 2/3: the same rate …
    assert ranked[0].score > ranked[1].score  # … but 19 successes weigh more than one
