"""kpi: device assignment history (customer and site at the time)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "device_assignments",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("valid_from", Ts, nullable=False),
        sa.Column("valid_to", Ts, nullable=True),
        sa.Column("valid_from_s", sa.Float(), nullable=False),
        sa.Column("valid_to_s", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_device_assignments_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_assignments_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_device_assignments_site_id_sites"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_assignments")),
    )
    with op.batch_alter_table("device_assignments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_device_assignments_device_from", ["device_id", "valid_from_s"], unique=False
        )
    # devices assigned before the history existed: their current values, from the epoch on
    sqlite = op.get_bind().dialect.name == "sqlite"  # naive UTC text there (server/db/types.py)
    epoch = "'1970-01-01 00:00:00.000000'" if sqlite else "TIMESTAMPTZ '1970-01-01 00:00:00+00:00'"
    op.execute(
        "INSERT INTO device_assignments (device_id, customer_id, site_id, valid_from, valid_from_s) "  # noqa: S608
        f"SELECT id, customer_id, site_id, {epoch}, 0 FROM devices "  # fixed text, no input
        "WHERE customer_id IS NOT NULL OR site_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("device_assignments", schema=None) as batch_op:
        batch_op.drop_index("ix_device_assignments_device_from")
    op.drop_table("device_assignments")
