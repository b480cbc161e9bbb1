"""incidents: status history, state trackers, incident episodes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "status_history",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", BigId, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_status_history_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_history")),
        sa.UniqueConstraint("device_id", "seq", name=op.f("uq_status_history_device_id_seq")),
    )
    with op.batch_alter_table("status_history", schema=None) as batch_op:
        batch_op.create_index("ix_status_history_device_received", ["device_id", "received_at"], unique=False)

    op.create_table(
        "state_trackers",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("mark_s", sa.Float(), nullable=True),
        sa.Column("mark_seq", BigId, nullable=True),
        sa.Column("due_s", sa.Float(), nullable=True),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.Column("snapshot", Json, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_state_trackers_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_state_trackers")),
    )
    with op.batch_alter_table("state_trackers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_state_trackers_due_s"), ["due_s"], unique=False)

    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("episodes", Json, nullable=False, server_default=sa.text("'[]'")))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("auto_resolve", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("auto_resolve")
        batch_op.drop_column("resolved_by")
        batch_op.drop_column("episodes")

    with op.batch_alter_table("state_trackers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_state_trackers_due_s"))
    op.drop_table("state_trackers")

    with op.batch_alter_table("status_history", schema=None) as batch_op:
        batch_op.drop_index("ix_status_history_device_received")
    op.drop_table("status_history")
