"""The published articles, indexed in memory for suggestions and search.

Ranking reads every candidate's environment, signature, term vector and counters; loading them
from the database per request would cost more than the ranking itself. The index is built once
and reused while the table is unchanged: every write to an article sets ``updated_at``, so one
``count(*), max(updated_at)`` query per request tells whether it is stale — also when another
server process wrote it. Writes in this process also call :func:`invalidate`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Article, ArticleLink, ArticleState, Incident
from server.knowledge import text

__all__ = ["ArticleIndex", "Entry", "current", "invalidate", "parse_version"]


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    title: str
    type: str
    models: frozenset[str]
    codes: frozenset[str]
    firmware_min: str | None
    firmware_max: str | None
    signature: dict[str, float]
    vector: text.Vector
    actions: list[dict[str, Any]]
    customer_safe: bool
    use_count: int
    success_count: int
    firmware_range: tuple[tuple[int, ...] | None, tuple[int, ...] | None] = (None, None)
    learned: frozenset[str] = frozenset()  # of ``codes``: not the article's, its fixed incidents'

    @property
    def success_rate(self) -> float:
        """Laplace-smoothed: a new article starts at 1/2, not at 0 or 1."""
        return (self.success_count + 1) / (self.use_count + 2)


def parse_version(value: str | None) -> tuple[int, ...] | None:
    """``"2.10.1"`` → ``(2, 10, 1)`` (non-digits ignored), so versions compare numerically."""
    if not value:
        return None
    return tuple(int("".join(ch for ch in part if ch.isdigit()) or 0) for part in value.split("."))


def article_text(title: str, symptom: str) -> str:
    return f"{title}\n{symptom}"


@dataclass(slots=True)
class ArticleIndex:
    stamp: tuple[int, datetime | None] = (0, None)
    entries: dict[int, Entry] = field(default_factory=dict)
    by_code: dict[str, list[int]] = field(default_factory=dict)
    by_model: dict[str, list[int]] = field(default_factory=dict)
    generic: list[int] = field(default_factory=list)  # articles for any model
    by_metric: dict[str, list[int]] = field(default_factory=dict)  # abnormal in the signature
    postings: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    idf: dict[str, float] = field(default_factory=dict)
    unseen_idf: float = 1.0

    @classmethod
    def build(
        cls,
        articles: Iterable[Article],
        stamp: tuple[int, datetime | None],
        learned: Mapping[int, Iterable[str]] | None = None,
    ) -> ArticleIndex:
        """``learned``: per article, the fault codes of incidents it fixed — an article written
        from a customer's report (no code) is found by the code its later incidents carried."""
        rows = list(articles)
        learned = learned or {}
        term_lists = [text.tokens(article_text(a.title, a.symptom)) for a in rows]
        idf, n = text.idf(term_lists)
        index = cls(stamp=stamp, idf=idf, unseen_idf=text_unseen(n))
        for article, terms in zip(rows, term_lists, strict=True):
            own = frozenset(article.fault_codes or ())
            extra = frozenset(learned.get(article.id, ())) - own
            entry = Entry(
                id=article.id,
                title=article.title,
                type=article.type,
                models=frozenset(article.models or ()),
                codes=own | extra,
                firmware_min=article.firmware_min,
                firmware_max=article.firmware_max,
                signature=dict(article.signature or {}),
                vector=text.vector(terms, idf, index.unseen_idf),
                actions=list(article.actions or []),
                customer_safe=article.customer_safe,
                use_count=article.use_count,
                success_count=article.success_count,
                firmware_range=(parse_version(article.firmware_min), parse_version(article.firmware_max)),
                learned=extra,
            )
            index.entries[entry.id] = entry
            for code in entry.codes:
                index.by_code.setdefault(code, []).append(entry.id)
            for model in entry.models:
                index.by_model.setdefault(model, []).append(entry.id)
            if not entry.models:
                index.generic.append(entry.id)
            for metric in entry.signature:
                index.by_metric.setdefault(metric, []).append(entry.id)
            for term, weight in entry.vector.items():
                index.postings.setdefault(term, []).append((entry.id, weight))
        return index

    def query(self, words: str) -> text.Vector:
        return text.vector(text.tokens(words), self.idf, self.unseen_idf)

    def text_scores(self, query: text.Vector) -> dict[int, float]:
        """Cosine of ``query`` with every article sharing a term (the others score 0)."""
        scores: dict[int, float] = {}
        for term, q in query.items():
            for article_id, weight in self.postings.get(term, ()):
                scores[article_id] = scores.get(article_id, 0.0) + q * weight
        return scores


def text_unseen(n: int) -> float:
    """The idf of a term that occurs in no document of ``n``."""
    return math.log(1 + n) + 1.0


_cache: dict[str, ArticleIndex] = {}
_lock = asyncio.Lock()


def invalidate() -> None:
    """Drop every cached index (this process wrote an article)."""
    _cache.clear()


async def _stamp(session: AsyncSession) -> tuple[int, datetime | None]:
    row = (await session.execute(select(func.count(Article.id), func.max(Article.updated_at)))).one()
    return int(row[0] or 0), row[1]


async def _learned_codes(session: AsyncSession) -> dict[int, set[str]]:
    """Per published article, the fault codes of the incidents it fixed (one grouped query)."""
    rows = await session.execute(
        select(ArticleLink.article_id, Incident.fault_code)
        .join(Incident, Incident.id == ArticleLink.incident_id)
        .join(Article, Article.id == ArticleLink.article_id)
        .where(
            ArticleLink.fixed.is_(True),
            Incident.fault_code.is_not(None),
            Article.state == ArticleState.PUBLISHED.value,
        )
        .group_by(ArticleLink.article_id, Incident.fault_code)
    )
    learned: dict[int, set[str]] = {}
    for article_id, code in rows:
        if code:
            learned.setdefault(article_id, set()).add(code)
    return learned


async def current(session: AsyncSession) -> ArticleIndex:
    """The index of published articles in ``session``'s database, rebuilt if the table changed."""
    key = str(session.get_bind().engine.url)
    stamp = await _stamp(session)
    cached = _cache.get(key)
    if cached is not None and cached.stamp == stamp:
        return cached
    async with _lock:
        cached = _cache.get(key)
        if cached is not None and cached.stamp == stamp:
            return cached
        rows = list(
            await session.scalars(select(Article).where(Article.state == ArticleState.PUBLISHED.value))
        )
        index = ArticleIndex.build(rows, stamp, await _learned_codes(session))
        _cache[key] = index
        return index
