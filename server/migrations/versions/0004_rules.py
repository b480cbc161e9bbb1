"""preventive maintenance: rule evaluation cursor and per-device rule state

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_sample_id", BigId, nullable=True))

    op.create_table(
        "rule_states",
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("last_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("alert_id", BigId, nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["rule_alerts.id"],
            name=op.f("fk_rule_states_alert_id_rule_alerts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_rule_states_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["rules.id"], name=op.f("fk_rule_states_rule_id_rules"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("rule_id", "device_id", name=op.f("pk_rule_states")),
    )


def downgrade() -> None:
    op.drop_table("rule_states")
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.drop_column("last_sample_id")
