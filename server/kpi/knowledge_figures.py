"""The knowledge phase of the SQL engine: the knowledge base's part of each row (article
links, reuse, resolve time with and without a link, suggestions applied and shown), driven
from the knowledge tables — few rows — joined to the incidents resolved in P.

Runs after :func:`server.kpi.incident_figures.resolved`, whose resolve-time sums give the
"without a link" part.
"""

# SQL text here is composed from fixed fragments (names, dialect spellings, code constants);
# every value from the data or the request is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
from typing import Any

from server.kpi.definitions import HIT_RANK
from server.kpi.records import APPLIED
from server.kpi.report_context import Accumulator, ReportContext, fetch

__all__ = ["knowledge"]


def resolved_in_buckets(ctx: ReportContext) -> str:
    """Joins from incidents (alias i) resolved in P to their customer/site period at the
    (clamped) t_fault (p), kept by the filters, and their bucket (kb): the incidents table
    itself, so knowledge measures need not load every resolved incident — they start from
    the few rows of the knowledge tables."""
    fault = ctx.dialect.least("i.fault_s", "i.detect_s")
    return f"""
        JOIN kpi_pieces p ON p.device_id = i.device_id AND p.pf <= {fault} AND {fault} < p.pt
                        AND p.kept = 1 AND p.model_kept = 1
        JOIN kpi_buckets kb ON i.resolved_s >= kb.bs AND i.resolved_s < kb.be"""


async def knowledge(ctx: ReportContext, acc: Accumulator) -> None:
    """Knowledge measures of the incidents resolved in each bucket: their article links
    (and how many point to an article older than the incident), resolve time with a link
    (without: the rest of the row's resolve time); then the suggestions shown and applied."""
    d = ctx.dialect
    group = ctx.group("p", "i.fault_code")
    code = ctx.fault_filter("i.fault_code")
    sql = f"""
        WITH lk AS (
            SELECT l.incident_id AS id, COUNT(*) AS n,
                   SUM(CASE WHEN {d.epoch("a.created_at")} < i.detect_s THEN 1 ELSE 0 END) AS reused
            FROM kb_article_links l
            JOIN incidents i ON i.id = l.incident_id
            LEFT JOIN kb_articles a ON a.id = l.article_id
            WHERE i.resolved_s >= :t0 AND i.resolved_s < :te{code}
            GROUP BY l.incident_id
        )
        SELECT {group} AS g, kb.b, COUNT(*), SUM(lk.n), SUM(lk.reused),
               SUM({d.nonneg("i.resolved_s - i.detect_s")})
        FROM lk JOIN incidents i ON i.id = lk.id{resolved_in_buckets(ctx)}
        GROUP BY 1, 2
    """
    for g, b, linked, links, reused, with_total in await fetch(ctx, acc, "knowledge", sql):
        kb = acc.row(g, b).kb
        kb.linked, kb.links, kb.reused = int(linked or 0), int(links or 0), int(reused or 0)
        kb.with_total = float(with_total or 0.0)
    for agg in acc.rows.values():
        agg.kb.without_total = max(0.0, agg.mttresolve.total - agg.kb.with_total)
    await shown_suggestions(ctx, acc, group, code)
    await applied_suggestions(ctx, acc, group, code)


async def applied_suggestions(ctx: ReportContext, acc: Accumulator, group: str, code: str) -> None:
    """kb_applied / kb_applied_hits: the applied suggestions, read from the timeline (few
    rows) and matched here with the articles whose link fixed the incident."""
    applied = await fetch(
        ctx,
        acc,
        "knowledge_applied",
        f"""
        SELECT {group} AS g, kb.b, i.id, e.detail
        FROM incident_timeline e JOIN incidents i ON i.id = e.incident_id{resolved_in_buckets(ctx)}
        WHERE e.kind = :applied AND i.resolved_s >= :t0 AND i.resolved_s < :te{code}
        """,
        applied=APPLIED,
    )
    if not applied:
        return
    fixed = await fetch(
        ctx,
        acc,
        "knowledge_fixed",
        """
        SELECT l.incident_id, l.article_id FROM kb_article_links l
        JOIN incidents i ON i.id = l.incident_id
        WHERE l.fixed AND i.resolved_s >= :t0 AND i.resolved_s < :te
        """,
    )
    worked: dict[int, set[int]] = {}
    for incident_id, article_id in fixed:
        worked.setdefault(incident_id, set()).add(article_id)
    per_incident: dict[tuple[Any, int, int], set[int]] = {}
    for g, b, incident_id, detail in applied:
        value = json.loads(detail) if isinstance(detail, str) else detail
        article = value.get("article_id") if isinstance(value, dict) else None
        articles = per_incident.setdefault((g, b, incident_id), set())
        if isinstance(article, int):
            articles.add(article)
    for (g, b, incident_id), articles in per_incident.items():
        if not articles:
            continue
        kb = acc.row(g, b).kb
        kb.applied += 1
        kb.applied_hits += bool(articles & worked.get(incident_id, set()))


async def shown_suggestions(ctx: ReportContext, acc: Accumulator, group: str, code: str) -> None:
    """kb_shown / kb_shown_hits5: per incident resolved in the bucket, whether suggestions
    were shown at or before its resolution, and whether one shown at rank <= HIT_RANK is
    an article whose link fixed it (kb_suggestions_shown joined with kb_article_links)."""
    sql = f"""
        WITH sh AS (
            SELECT s.incident_id AS id,
                   MAX(CASE WHEN s.best_rank <= :hit_rank AND EXISTS (
                           SELECT 1 FROM kb_article_links l
                           WHERE l.incident_id = s.incident_id AND l.article_id = s.article_id AND l.fixed
                       ) THEN 1 ELSE 0 END) AS hit
            FROM kb_suggestions_shown s JOIN incidents i ON i.id = s.incident_id
            WHERE {ctx.dialect.epoch("s.first_shown_at")} <= i.resolved_s
              AND i.resolved_s >= :t0 AND i.resolved_s < :te{code}
            GROUP BY s.incident_id
        )
        SELECT {group} AS g, kb.b, COUNT(*), SUM(sh.hit)
        FROM sh JOIN incidents i ON i.id = sh.id{resolved_in_buckets(ctx)}
        GROUP BY 1, 2
    """
    for g, b, shown, hits in await fetch(ctx, acc, "knowledge_shown", sql, hit_rank=HIT_RANK):
        kb = acc.row(g, b).kb
        kb.shown, kb.shown_hits5 = int(shown or 0), int(hits or 0)
