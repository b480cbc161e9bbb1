"""service: customers, sites, incidents, state intervals, rules

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 02:29:37.195611
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:

    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("criticality", sa.Integer(), nullable=False),
        sa.Column("contract_hours", Json, nullable=True),
        sa.Column("cost_per_dispatch", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("name", name=op.f("uq_customers_name")),
    )
    op.create_table(
        "rules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("op", sa.String(length=2), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_rules_name")),
    )
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rules_metric"), ["metric"], unique=False)

    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("criticality", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_sites_customer_id_customers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("customer_id", "name", name=op.f("uq_sites_customer_id_name")),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("fault_code", sa.String(length=256), nullable=True),
        sa.Column("codes", Json, nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("effect", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("external", sa.Boolean(), nullable=False),
        sa.Column("t_fault", sa.DateTime(timezone=True), nullable=False),
        sa.Column("t_detect", sa.DateTime(timezone=True), nullable=False),
        sa.Column("t_ack", sa.DateTime(timezone=True), nullable=True),
        sa.Column("t_respond", sa.DateTime(timezone=True), nullable=True),
        sa.Column("t_onsite", sa.DateTime(timezone=True), nullable=True),
        sa.Column("t_restored", sa.DateTime(timezone=True), nullable=True),
        sa.Column("t_resolved", sa.DateTime(timezone=True), nullable=True),
        sa.Column("t_closed", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fault_s", sa.Float(), nullable=False),
        sa.Column("detect_s", sa.Float(), nullable=False),
        sa.Column("ack_s", sa.Float(), nullable=True),
        sa.Column("respond_s", sa.Float(), nullable=True),
        sa.Column("restored_s", sa.Float(), nullable=True),
        sa.Column("resolved_s", sa.Float(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("assigned_to", sa.String(length=128), nullable=True),
        sa.Column("symptom", sa.Text(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=False),
        sa.Column("needs_dispatch", sa.Boolean(), nullable=False),
        sa.Column("remote_used", sa.Boolean(), nullable=False),
        sa.Column("visits", sa.Integer(), nullable=False),
        sa.Column("reopened", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_incidents_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.create_index("ix_incidents_device_fault", ["device_id", "fault_s"], unique=False)
        batch_op.create_index(batch_op.f("ix_incidents_fault_code"), ["fault_code"], unique=False)
        batch_op.create_index("ix_incidents_resolved", ["resolved_s"], unique=False)
        batch_op.create_index("ix_incidents_status", ["status"], unique=False)

    op.create_table(
        "rule_alerts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_rule_alerts_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["rules.id"], name=op.f("fk_rule_alerts_rule_id_rules"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_alerts")),
    )
    with op.batch_alter_table("rule_alerts", schema=None) as batch_op:
        batch_op.create_index("ix_rule_alerts_device_started", ["device_id", "started_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_rule_alerts_rule_id"), ["rule_id"], unique=False)

    op.create_table(
        "state_intervals",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("end_s", sa.Float(), nullable=True),
        sa.Column("external", sa.Boolean(), nullable=False),
        sa.Column("planned_end", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_state_intervals_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_state_intervals")),
    )
    with op.batch_alter_table("state_intervals", schema=None) as batch_op:
        batch_op.create_index("ix_state_intervals_device_start", ["device_id", "start_s"], unique=False)
        batch_op.create_index("ix_state_intervals_state_start", ["state", "start_s"], unique=False)

    op.create_table(
        "transient_faults",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=256), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_transient_faults_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transient_faults")),
    )
    with op.batch_alter_table("transient_faults", schema=None) as batch_op:
        batch_op.create_index("ix_transient_faults_device_raised", ["device_id", "raised_at"], unique=False)

    op.create_table(
        "incident_timeline",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("detail", Json, nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_timeline_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_timeline")),
    )
    with op.batch_alter_table("incident_timeline", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_incident_timeline_incident_id"), ["incident_id"], unique=False)

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("site_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("criticality", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("decommissioned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_devices_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_site_id"), ["site_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_devices_customer_id_customers"), "customers", ["customer_id"], ["id"]
        )
        batch_op.create_foreign_key(batch_op.f("fk_devices_site_id_sites"), "sites", ["site_id"], ["id"])


def downgrade() -> None:

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_devices_site_id_sites"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_devices_customer_id_customers"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_devices_site_id"))
        batch_op.drop_index(batch_op.f("ix_devices_customer_id"))
        batch_op.drop_column("decommissioned_at")
        batch_op.drop_column("criticality")
        batch_op.drop_column("site_id")
        batch_op.drop_column("customer_id")

    with op.batch_alter_table("incident_timeline", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incident_timeline_incident_id"))

    op.drop_table("incident_timeline")
    with op.batch_alter_table("transient_faults", schema=None) as batch_op:
        batch_op.drop_index("ix_transient_faults_device_raised")

    op.drop_table("transient_faults")
    with op.batch_alter_table("state_intervals", schema=None) as batch_op:
        batch_op.drop_index("ix_state_intervals_state_start")
        batch_op.drop_index("ix_state_intervals_device_start")

    op.drop_table("state_intervals")
    with op.batch_alter_table("rule_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rule_alerts_rule_id"))
        batch_op.drop_index("ix_rule_alerts_device_started")

    op.drop_table("rule_alerts")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_index("ix_incidents_status")
        batch_op.drop_index("ix_incidents_resolved")
        batch_op.drop_index(batch_op.f("ix_incidents_fault_code"))
        batch_op.drop_index("ix_incidents_device_fault")

    op.drop_table("incidents")
    op.drop_table("sites")
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rules_metric"))

    op.drop_table("rules")
    op.drop_table("customers")
