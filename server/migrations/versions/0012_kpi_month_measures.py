"""kpi: more per device and month measures in the incident rollups (opened, remote sessions,
failures, repeats, failure episodes, transient faults), transient faults mark the device
dirty, state time in contract hours per device and month, and an index for the timeline's
applied suggestions

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-21 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MEASURES = ("opened", "remote", "failures", "repeats", "episodes", "transients")
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
_SQLITE_TRIGGERS = {
    "insert": ("INSERT", ["NEW.device_id"]),
    "delete": ("DELETE", ["OLD.device_id"]),
    "update": ("UPDATE", ["OLD.device_id", "NEW.device_id"]),
}


def upgrade() -> None:
    with op.batch_alter_table("kpi_incident_months") as batch:
        for name in _MEASURES:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    op.create_table(  # a device's twelve months of a UTC year in one row (kpi_incident_months')
        "kpi_incident_years",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("year_s", sa.Float(), nullable=False),
        sa.Column("lo_s", sa.Float(), nullable=False),
        sa.Column("hi_s", sa.Float(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in _COUNTS),
        *(sa.Column(name, sa.Float(), nullable=False) for name in _TOTALS),
        *(sa.Column(name, sa.LargeBinary(), nullable=False) for name in _VALUES),
        *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in _MEASURES),
        sa.PrimaryKeyConstraint("device_id", "year_s", name=op.f("pk_kpi_incident_years")),
    )
    op.create_table(  # failures that begin an episode (built with the incident rollups)
        "kpi_episode_starts",
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("incident_id", name=op.f("pk_kpi_episode_starts")),
    )
    op.create_index("ix_kpi_episode_starts_device_id", "kpi_episode_starts", ["device_id"])
    op.create_table(
        "kpi_contract_months",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("month_s", sa.Float(), nullable=False),
        sa.Column("month_e", sa.Float(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("hours_key", sa.String(length=512), nullable=False),
        *(sa.Column(f"u{k}", sa.Float(), nullable=False) for k in (1, 2, 3, 4)),
        sa.PrimaryKeyConstraint("device_id", "month_s", name=op.f("pk_kpi_contract_months")),
    )
    # built with the state segments: rebuild every device's (segments kept, from the start)
    op.execute(
        "INSERT INTO kpi_rollup_dirty (device_id, since_s) SELECT DISTINCT device_id, -1e300 "
        "FROM kpi_state_segments WHERE device_id NOT IN (SELECT device_id FROM kpi_rollup_dirty)"
    )
    op.create_index("ix_incident_timeline_kind_incident", "incident_timeline", ["kind", "incident_id"])
    # a month's transient faults are part of its rollup row: their writes mark the device dirty
    if op.get_bind().dialect.name == "sqlite":
        for name, (event, devices) in _SQLITE_TRIGGERS.items():
            inserts = " ".join(
                f"INSERT INTO kpi_incident_dirty (device_id) VALUES ({device}) ON CONFLICT (device_id) DO NOTHING;"  # noqa: S608 - fixed names
                for device in devices
            )
            op.execute(
                f"CREATE TRIGGER kpi_transient_dirty_{name} AFTER {event} ON transient_faults FOR EACH ROW "
                f"BEGIN {inserts} END"
            )
    else:  # the function of migration 0011 reads only OLD/NEW.device_id
        op.execute(
            "CREATE TRIGGER kpi_transient_dirty AFTER INSERT OR UPDATE OR DELETE ON transient_faults "
            "FOR EACH ROW EXECUTE FUNCTION kpi_mark_incident_dirty()"
        )
    # every existing row lacks the new measures: read raw until rebuilt
    op.execute(
        "INSERT INTO kpi_incident_dirty (device_id) SELECT x.device_id FROM "
        "(SELECT device_id FROM incidents UNION SELECT device_id FROM transient_faults) x "
        "WHERE x.device_id NOT IN (SELECT device_id FROM kpi_incident_dirty)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS kpi_transient_dirty_{name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS kpi_transient_dirty ON transient_faults")
    op.drop_index("ix_incident_timeline_kind_incident", table_name="incident_timeline")
    op.drop_table("kpi_contract_months")
    op.drop_table("kpi_incident_years")
    op.drop_index("ix_kpi_episode_starts_device_id", table_name="kpi_episode_starts")
    op.drop_table("kpi_episode_starts")
    with op.batch_alter_table("kpi_incident_months") as batch:
        for name in _MEASURES:
            batch.drop_column(name)
