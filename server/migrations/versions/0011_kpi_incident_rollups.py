"""kpi: incident rollups (per device and UTC month of resolution) and their dirty marks

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-21 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every write to incidents (ORM, Core, bulk, raw SQL, cascades) marks the device dirty: its
# rollup rows depend on all of its incidents (first-time fix looks at later ones), so
# server/kpi/incident_rollups.py rebuilds the whole device.
_SQLITE_TRIGGERS = {
    "insert": ("INSERT", ["NEW.device_id"]),
    "delete": ("DELETE", ["OLD.device_id"]),
    "update": ("UPDATE", ["OLD.device_id", "NEW.device_id"]),
}
_COUNTS = (
    "n",
    "ch_auto",
    "ch_customer",
    "ch_remote",
    "ch_field",
    "avoided",
    "ftf",
    "n_mtrs",
    "n_mtta",
    "n_mttrespond",
)
_TOTALS = ("t_mtrs", "t_mtta", "t_mttrespond", "t_mttresolve")
_VALUES = ("v_mtrs", "v_mtta", "v_mttrespond", "v_mttresolve", "v_avoided")


def upgrade() -> None:
    op.create_table(
        "kpi_incident_months",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("month_s", sa.Float(), nullable=False),
        sa.Column("lo_s", sa.Float(), nullable=False),
        sa.Column("hi_s", sa.Float(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in _COUNTS),
        *(sa.Column(name, sa.Float(), nullable=False) for name in _TOTALS),
        *(sa.Column(name, sa.LargeBinary(), nullable=False) for name in _VALUES),
        sa.PrimaryKeyConstraint("device_id", "month_s", name=op.f("pk_kpi_incident_months")),
    )
    op.create_index("ix_kpi_incident_months_month", "kpi_incident_months", ["month_s"])
    op.create_table(
        "kpi_incident_dirty",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_kpi_incident_dirty")),
    )
    if op.get_bind().dialect.name == "sqlite":
        for name, (event, devices) in _SQLITE_TRIGGERS.items():
            inserts = " ".join(
                f"INSERT INTO kpi_incident_dirty (device_id) VALUES ({device}) ON CONFLICT (device_id) DO NOTHING;"  # noqa: S608 - fixed names
                for device in devices
            )
            op.execute(
                f"CREATE TRIGGER kpi_incident_dirty_{name} AFTER {event} ON incidents FOR EACH ROW "
                f"BEGIN {inserts} END"
            )
    else:
        op.execute(
            """
            CREATE FUNCTION kpi_mark_incident_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP IN ('DELETE', 'UPDATE') THEN
                    INSERT INTO kpi_incident_dirty (device_id) VALUES (OLD.device_id)
                    ON CONFLICT (device_id) DO NOTHING;
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    INSERT INTO kpi_incident_dirty (device_id) VALUES (NEW.device_id)
                    ON CONFLICT (device_id) DO NOTHING;
                END IF;
                RETURN NULL;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER kpi_incident_dirty AFTER INSERT OR UPDATE OR DELETE ON incidents "
            "FOR EACH ROW EXECUTE FUNCTION kpi_mark_incident_dirty()"
        )
    # existing history: read raw until server.kpi.incident_rollups.refresh_incident_rollups
    # has built it
    op.execute("INSERT INTO kpi_incident_dirty (device_id) SELECT DISTINCT device_id FROM incidents")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS kpi_incident_dirty_{name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS kpi_incident_dirty ON incidents")
        op.execute("DROP FUNCTION IF EXISTS kpi_mark_incident_dirty()")
    op.drop_table("kpi_incident_dirty")
    op.drop_index("ix_kpi_incident_months_month", table_name="kpi_incident_months")
    op.drop_table("kpi_incident_months")
