"""knowledge: KCS articles and their links to incidents (docs/knowledge.md)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "kb_articles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("symptom", sa.Text(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=False),
        sa.Column("actions", Json, nullable=False),
        sa.Column("models", Json, nullable=False),
        sa.Column("fault_codes", Json, nullable=False),
        sa.Column("firmware_min", sa.String(length=64), nullable=True),
        sa.Column("firmware_max", sa.String(length=64), nullable=True),
        sa.Column("signature", Json, nullable=False),
        sa.Column("customer_safe", sa.Boolean(), nullable=False),
        sa.Column("use_count", sa.Integer(), nullable=False),
        sa.Column("reuse_count", sa.Integer(), nullable=False),
        sa.Column("success_count", sa.Integer(), nullable=False),
        sa.Column("apply_count", sa.Integer(), nullable=False),
        sa.Column("source_incident_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.Column("published_at", Ts, nullable=True),
        sa.Column("retired_at", Ts, nullable=True),
        sa.Column("last_used_at", Ts, nullable=True),
        sa.ForeignKeyConstraint(
            ["source_incident_id"],
            ["incidents.id"],
            name=op.f("fk_kb_articles_source_incident_id_incidents"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_articles")),
    )
    op.create_index("ix_kb_articles_state", "kb_articles", ["state"], unique=False)
    op.create_table(
        "kb_article_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("fixed", sa.Boolean(), nullable=False),
        sa.Column("signature", Json, nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["kb_articles.id"],
            name=op.f("fk_kb_article_links_article_id_kb_articles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_kb_article_links_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_article_links")),
        sa.UniqueConstraint(
            "article_id", "incident_id", name=op.f("uq_kb_article_links_article_id_incident_id")
        ),
    )
    op.create_index(op.f("ix_kb_article_links_article_id"), "kb_article_links", ["article_id"], unique=False)
    op.create_index(
        op.f("ix_kb_article_links_incident_id"), "kb_article_links", ["incident_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("kb_article_links")
    op.drop_index("ix_kb_articles_state", table_name="kb_articles")
    op.drop_table("kb_articles")
