"""Articles: write (technician, admin), read (ops too; customers only published customer-safe
ones), publish, retire — and the guided steps a published customer-safe article becomes.

State: ``draft → published → retired`` (a draft may be retired too; nothing leaves
``retired``). Every change sets ``updated_at`` (the suggestion index watches it) and writes an
audit row ``article.<action>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from server.base import audit
from server.base.users import Principal
from server.db.models import Article, ArticleLink, ArticleState, ArticleType, Guide, Role, SuggestionShown
from server.db.types import utcnow
from server.errors import Conflict, InvalidInput, NotFound
from server.knowledge import index

__all__ = [
    "EDITABLE",
    "ArticleFilter",
    "create_article",
    "get_article",
    "guide_steps",
    "list_articles",
    "publish",
    "retire",
    "suggested_counts",
    "sync_guides",
    "update_article",
    "visible_to",
]

DRAFT, PUBLISHED, RETIRED = (s.value for s in ArticleState)
EDITABLE = frozenset(
    {
        "title",
        "type",
        "symptom",
        "cause",
        "resolution",
        "actions",
        "models",
        "fault_codes",
        "firmware_min",
        "firmware_max",
        "customer_safe",
    }
)


@dataclass(frozen=True, slots=True)
class ArticleFilter:
    state: str | None = None
    fault_code: str | None = None
    model: str | None = None  # articles for that model and for any model
    type: str | None = None


def visible_to(who: Principal) -> list[ColumnElement[bool]]:
    """Conditions on :class:`Article` for what ``who`` may read."""
    if who.role is Role.CUSTOMER:
        return [Article.state == PUBLISHED, Article.customer_safe.is_(True)]
    return []


def _check(values: dict[str, Any]) -> None:
    if "type" in values and values["type"] not in {t.value for t in ArticleType}:
        raise InvalidInput(f"type: one of {', '.join(t.value for t in ArticleType)}", field="type")
    for key in ("title", "symptom"):
        if key in values and not str(values[key] or "").strip():
            raise InvalidInput(f"{key}: cannot be empty", field=key)


def _audit(session: AsyncSession, who: Principal, action: str, article: Article, **detail: Any) -> None:
    audit.record(
        session, actor=who.actor, action=f"article.{action}", target=f"article:{article.id}", detail=detail
    )


async def create_article(session: AsyncSession, who: Principal, values: dict[str, Any]) -> Article:
    """A new draft (``values``: the :data:`EDITABLE` fields; ``title`` and ``symptom`` required)."""
    unknown = set(values) - EDITABLE
    if unknown:
        raise InvalidInput(f"{sorted(unknown)[0]}: not an article field", field=sorted(unknown)[0])
    for key in ("title", "symptom"):
        if key not in values:
            raise InvalidInput(f"{key}: required", field=key)
    _check(values)
    now = utcnow()
    article = Article(
        state=DRAFT,
        created_by=who.name,
        created_at=now,
        updated_at=now,
        **{
            "type": ArticleType.PROBLEM.value,
            "cause": "",
            "resolution": "",
            "actions": [],
            "models": [],
            "fault_codes": [],
            "signature": {},
            "customer_safe": False,
            **values,
        },
    )
    session.add(article)
    await session.flush()
    _audit(session, who, "created", article, title=article.title)
    await session.commit()
    index.invalidate()
    return article


async def _load(session: AsyncSession, article_id: int, *, lock: bool = False) -> Article:
    query = select(Article).where(Article.id == article_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    article = await session.scalar(query)
    if article is None:
        raise NotFound("article", article_id)
    return article


async def get_article(session: AsyncSession, who: Principal, article_id: int) -> Article:
    """The article if ``who`` may read it (a customer: published and customer-safe, else 404)."""
    article = await session.scalar(select(Article).where(Article.id == article_id, *visible_to(who)))
    if article is None:
        raise NotFound("article", article_id)
    return article


async def linked_incidents(session: AsyncSession, article_id: int) -> list[ArticleLink]:
    rows = await session.scalars(
        select(ArticleLink).where(ArticleLink.article_id == article_id).order_by(ArticleLink.id)
    )
    return list(rows)


async def list_articles(
    session: AsyncSession, who: Principal, where: ArticleFilter, *, limit: int = 100, offset: int = 0
) -> tuple[list[Article], int]:
    """Articles ``who`` may read, most successful first. The JSON environment lists are matched
    in Python (a few thousand articles; portable across SQLite and PostgreSQL)."""
    conditions = visible_to(who)
    if where.state is not None:
        conditions.append(Article.state == where.state)
    if where.type is not None:
        conditions.append(Article.type == where.type)
    rows = list(
        await session.scalars(
            select(Article).where(*conditions).order_by(Article.success_count.desc(), Article.id)
        )
    )
    if where.fault_code is not None:
        rows = [a for a in rows if where.fault_code in (a.fault_codes or [])]
    if where.model is not None:
        rows = [a for a in rows if not a.models or where.model in a.models]
    return rows[offset : offset + limit], len(rows)


async def suggested_counts(session: AsyncSession, article_ids: list[int]) -> dict[int, int]:
    """Per article, the incidents it was suggested for (``kb_suggestions_shown``: one row per
    incident and article, recorded while the incident was unresolved) — how often the
    suggestions put it in front of a technician, beside how often it was used and worked."""
    if not article_ids:
        return {}
    rows = await session.execute(
        select(SuggestionShown.article_id, func.count())
        .where(SuggestionShown.article_id.in_(sorted(set(article_ids))))
        .group_by(SuggestionShown.article_id)
    )
    return {int(article_id): int(n) for article_id, n in rows}


async def update_article(
    session: AsyncSession, who: Principal, article_id: int, changes: dict[str, Any]
) -> Article:
    unknown = set(changes) - EDITABLE
    if unknown:
        raise InvalidInput(f"{sorted(unknown)[0]}: not an article field", field=sorted(unknown)[0])
    if not changes:
        raise InvalidInput("body: nothing to change", field="body")
    _check(changes)
    article = await _load(session, article_id, lock=True)
    if article.state == RETIRED:
        raise Conflict(f"article {article_id} is retired: write a new one")
    for key, value in changes.items():
        setattr(article, key, value)
    article.updated_at = utcnow()
    await sync_guides(session, article)
    _audit(session, who, "updated", article, fields=sorted(changes))
    await session.commit()
    index.invalidate()
    return article


async def publish(session: AsyncSession, who: Principal, article_id: int) -> Article:
    """Draft → published: suggested from now on; a customer-safe one becomes guided steps."""
    article = await _load(session, article_id, lock=True)
    if article.state != DRAFT:
        raise Conflict(f"article {article_id} is {article.state}: only a draft can be published")
    now = utcnow()
    article.state, article.published_at, article.updated_at = PUBLISHED, now, now
    await sync_guides(session, article)
    _audit(session, who, "published", article)
    await session.commit()
    index.invalidate()
    return article


async def retire(session: AsyncSession, who: Principal, article_id: int, *, reason: str = "") -> Article:
    """Never suggested or shown to customers again; kept for the incidents that link it."""
    article = await _load(session, article_id, lock=True)
    if article.state == RETIRED:
        raise Conflict(f"article {article_id} is already retired")
    now = utcnow()
    article.state, article.retired_at, article.updated_at = RETIRED, now, now
    await sync_guides(session, article)
    _audit(session, who, "retired", article, reason=reason)
    await session.commit()
    index.invalidate()
    return article


def guide_steps(article: Article) -> list[dict[str, Any]]:
    """The article's resolution as guide steps: one per line of its text, then one per remote
    action (``action`` names it, as authored guides do)."""
    steps: list[dict[str, Any]] = [
        {"text": line.strip(" -*\t"), "action": None}
        for line in article.resolution.splitlines()
        if line.strip(" -*\t")
    ]
    for item in article.actions or []:
        args = item.get("args") or {}
        shown = " ".join(f"{k}={v}" for k, v in args.items())
        steps.append(
            {"text": f"Run {item['action']}" + (f" ({shown})" if shown else ""), "action": item["action"]}
        )
    return steps


async def sync_guides(session: AsyncSession, article: Article) -> None:
    """Keep the article's guides (``source = article:<id>``, one per fault code and model) in
    line with it: present while it is published and customer-safe, retired otherwise. Guides
    are retired, never deleted: runs refer to them."""
    source = f"article:{article.id}"
    current = list(
        await session.scalars(select(Guide).where(Guide.source == source, Guide.retired_at.is_(None)))
    )
    steps = guide_steps(article)
    wanted: set[tuple[str, str | None]] = set()
    if article.state == PUBLISHED and article.customer_safe and steps:
        models: list[str | None] = [*article.models] if article.models else [None]
        wanted = {(code, model) for code in article.fault_codes or [] for model in models}
    now = utcnow()
    for guide in current:
        key = (guide.fault_code, guide.model)
        if key in wanted:
            guide.title, guide.steps = article.title, steps
            wanted.discard(key)
        else:
            guide.retired_at = now
    for code, model in sorted(wanted, key=lambda k: (k[0], k[1] or "")):
        session.add(
            Guide(
                fault_code=code,
                model=model,
                title=article.title,
                steps=steps,
                customer_safe=True,
                source=source,
                created_by=article.created_by,
                created_at=now,
            )
        )
