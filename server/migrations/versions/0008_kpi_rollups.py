"""kpi: state rollups (prefix sums of each device's state timeline) and their dirty marks

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every write to state_intervals (ORM, Core, bulk, raw SQL, cascades) marks the device dirty
# from the earliest start it touched; server/kpi/rollups.py rebuilds from there.
_SQLITE_TRIGGERS = {
    "insert": ("INSERT", "NEW.device_id", "NEW.start_s"),
    "delete": ("DELETE", "OLD.device_id", "OLD.start_s"),
    "update_old": ("UPDATE", "OLD.device_id", "min(OLD.start_s, NEW.start_s)"),
    "update_new": ("UPDATE", "NEW.device_id", "min(OLD.start_s, NEW.start_s)"),
}


def upgrade() -> None:
    op.create_table(
        "kpi_state_segments",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("lvl", sa.Integer(), nullable=False),
        sa.Column("c1", sa.Float(), nullable=False),
        sa.Column("c2", sa.Float(), nullable=False),
        sa.Column("c3", sa.Float(), nullable=False),
        sa.Column("c4", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "start_s", name=op.f("pk_kpi_state_segments")),
    )
    op.create_table(
        "kpi_rollup_dirty",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("since_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_kpi_rollup_dirty")),
    )
    if op.get_bind().dialect.name == "sqlite":
        for name, (event, device, since) in _SQLITE_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER kpi_dirty_{name} AFTER {event} ON state_intervals FOR EACH ROW BEGIN "  # noqa: S608
                f"INSERT INTO kpi_rollup_dirty (device_id, since_s) VALUES ({device}, {since}) "
                "ON CONFLICT (device_id) DO UPDATE SET since_s = min(since_s, excluded.since_s); END"
            )
    else:
        op.execute(
            """
            CREATE FUNCTION kpi_mark_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP IN ('DELETE', 'UPDATE') THEN
                    INSERT INTO kpi_rollup_dirty (device_id, since_s)
                    VALUES (OLD.device_id, CASE WHEN TG_OP = 'UPDATE'
                            THEN LEAST(OLD.start_s, NEW.start_s) ELSE OLD.start_s END)
                    ON CONFLICT (device_id)
                    DO UPDATE SET since_s = LEAST(kpi_rollup_dirty.since_s, EXCLUDED.since_s);
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    INSERT INTO kpi_rollup_dirty (device_id, since_s)
                    VALUES (NEW.device_id, CASE WHEN TG_OP = 'UPDATE'
                            THEN LEAST(OLD.start_s, NEW.start_s) ELSE NEW.start_s END)
                    ON CONFLICT (device_id)
                    DO UPDATE SET since_s = LEAST(kpi_rollup_dirty.since_s, EXCLUDED.since_s);
                END IF;
                RETURN NULL;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER kpi_dirty AFTER INSERT OR UPDATE OR DELETE ON state_intervals "
            "FOR EACH ROW EXECUTE FUNCTION kpi_mark_dirty()"
        )
    # existing history: every device with intervals is dirty from the beginning (read raw by
    # the reports until server.kpi.rollups.refresh_rollups has built it)
    op.execute(
        "INSERT INTO kpi_rollup_dirty (device_id, since_s) "
        "SELECT device_id, MIN(start_s) FROM state_intervals GROUP BY device_id"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS kpi_dirty_{name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS kpi_dirty ON state_intervals")
        op.execute("DROP FUNCTION IF EXISTS kpi_mark_dirty()")
    op.drop_table("kpi_rollup_dirty")
    op.drop_table("kpi_state_segments")
