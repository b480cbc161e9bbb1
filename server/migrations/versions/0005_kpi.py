"""kpi: indexes for the KPI queries (server/kpi/query.py)

Intervals overlapping a period (two covering indexes: by end, by start — the query takes the
narrower range), incidents by detection/fault/restore time, repeats of a fault code on a
device, transient faults by time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 11:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATE = ("state", "device_id", "external", "planned_end")
INDEXES = [
    ("state_intervals", "ix_state_intervals_end_start", ["end_s", "start_s", *_STATE]),
    ("state_intervals", "ix_state_intervals_start_end", ["start_s", "end_s", *_STATE]),
    ("incidents", "ix_incidents_detect", ["detect_s"]),
    ("incidents", "ix_incidents_fault", ["fault_s"]),
    ("incidents", "ix_incidents_restored", ["restored_s"]),
    ("incidents", "ix_incidents_device_code_fault", ["device_id", "fault_code", "fault_s", "detect_s"]),
    (
        "incidents",
        "ix_incidents_device_code_restored",
        ["device_id", "fault_code", "restored_s", "effect", "external"],
    ),
    ("transient_faults", "ix_transient_faults_raised", ["raised_at"]),
]


def upgrade() -> None:
    for table, name, columns in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, name, _columns in reversed(INDEXES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(name)
