"""hardening: devices.revoked_at (a revoked identity is refused by ingest as well as by the
broker) and quarantined_messages (an up-message whose handling raised something unexpected,
kept with its reason instead of stopping ingestion)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 05:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcDateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("revoked_at", UtcDateTime, nullable=True))
    op.create_table(
        "quarantined_messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("topic", sa.String(256), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("seq", BigId, nullable=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("error", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_quarantined_messages_received_at", "quarantined_messages", ["received_at"])
    op.create_index("ix_quarantined_messages_device_id", "quarantined_messages", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_quarantined_messages_device_id", table_name="quarantined_messages")
    op.drop_index("ix_quarantined_messages_received_at", table_name="quarantined_messages")
    op.drop_table("quarantined_messages")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("revoked_at")
