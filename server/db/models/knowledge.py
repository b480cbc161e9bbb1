"""The knowledge base: articles, their links to incidents, suggestions shown."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base
from server.db.types import Json, UtcDateTime, utcnow

__all__ = ["Article", "ArticleLink", "ArticleState", "ArticleType", "SuggestionShown"]


class ArticleState(StrEnum):
    """``draft → published → retired``. Only published articles are suggested or shown to
    customers; a retired one is kept for the incidents that link it."""

    DRAFT = "draft"
    PUBLISHED = "published"
    RETIRED = "retired"


class ArticleType(StrEnum):
    PROBLEM = "problem"  # a fault and its fix
    HOW_TO = "how-to"  # how to do something with the equipment
    DIAGNOSTIC = "diagnostic"  # how to find out what is wrong


class Article(Base):
    """A KCS article: the symptom in the customer's words, the environment it applies to, the
    cause and the resolution (text steps, and remote actions with their arguments), with the
    counters the suggestions weigh (``success_count`` of ``use_count`` incidents it was used on)."""

    __tablename__ = "kb_articles"
    __table_args__ = (Index("ix_kb_articles_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(16), default=ArticleType.PROBLEM.value)
    state: Mapped[str] = mapped_column(String(16), default=ArticleState.DRAFT.value)
    symptom: Mapped[str] = mapped_column(Text, default="")
    cause: Mapped[str] = mapped_column(Text, default="")
    resolution: Mapped[str] = mapped_column(Text, default="")
    actions: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)  # [{"action", "args"}]
    models: Mapped[list[str]] = mapped_column(Json, default=list)  # empty: any model
    fault_codes: Mapped[list[str]] = mapped_column(Json, default=list)
    firmware_min: Mapped[str | None] = mapped_column(String(64))
    firmware_max: Mapped[str | None] = mapped_column(String(64))
    signature: Mapped[dict[str, float]] = mapped_column(Json, default=dict)  # metric -> mean z-score
    customer_safe: Mapped[bool] = mapped_column(Boolean, default=False)
    use_count: Mapped[int] = mapped_column(Integer, default=0)  # incidents linked (drafted or reused)
    reuse_count: Mapped[int] = mapped_column(Integer, default=0)  # links to it after it existed
    success_count: Mapped[int] = mapped_column(Integer, default=0)  # links where it fixed the fault
    apply_count: Mapped[int] = mapped_column(Integer, default=0)  # remote actions sent from a suggestion
    source_incident_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("incidents.id", ondelete="SET NULL")
    )
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)  # any change: the index
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ArticleLink(Base):
    """An incident resolved with an article: ``drafted`` (the article was written from it) or
    ``linked`` (an existing article reused); ``fixed``: the article's fix worked (a reopen of the
    incident turns it false). ``signature``: the incident's abnormal metrics at the fault."""

    __tablename__ = "kb_article_links"
    __table_args__ = (UniqueConstraint("article_id", "incident_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("kb_articles.id", ondelete="CASCADE"), index=True
    )
    incident_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # drafted | linked
    fixed: Mapped[bool] = mapped_column(Boolean, default=True)
    signature: Mapped[dict[str, float]] = mapped_column(Json, default=dict)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SuggestionShown(Base):
    """An article served as a suggestion for an incident (migration 0010): one row per incident
    and article, upserted on every ``GET /incidents/{id}/suggestions`` while the incident is
    unresolved — ``best_rank`` the best (lowest, 1-based) position it was shown at, and
    ``first_shown_at`` when it was first shown. Read by the KPI ``kb_suggestion_hit5``."""

    __tablename__ = "kb_suggestions_shown"
    __table_args__ = (UniqueConstraint("incident_id", "article_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(Integer, ForeignKey("incidents.id", ondelete="CASCADE"))
    article_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("kb_articles.id", ondelete="CASCADE"), index=True
    )
    best_rank: Mapped[int] = mapped_column(Integer)
    first_shown_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
