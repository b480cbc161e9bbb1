"""knowledge: which articles were shown as suggestions for an incident, at which best rank
(the KPI kb_suggestion_hit5, docs/kpis.md)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-21 18:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "kb_suggestions_shown",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("best_rank", sa.Integer(), nullable=False),
        sa.Column("first_shown_at", Ts, nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_kb_suggestions_shown_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["kb_articles.id"],
            name=op.f("fk_kb_suggestions_shown_article_id_kb_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_suggestions_shown")),
        sa.UniqueConstraint(
            "incident_id", "article_id", name=op.f("uq_kb_suggestions_shown_incident_id_article_id")
        ),
    )
    op.create_index(
        op.f("ix_kb_suggestions_shown_article_id"), "kb_suggestions_shown", ["article_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_kb_suggestions_shown_article_id"), table_name="kb_suggestions_shown")
    op.drop_table("kb_suggestions_shown")
