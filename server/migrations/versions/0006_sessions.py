"""sessions: remote sessions and their timeline, passwords, customer users and technician
assignments, the hash-chained audit log, cancellable commands, attended sites, guides

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_hash", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("customer_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("disabled_at", Ts, nullable=True))
        batch_op.create_index(batch_op.f("ix_users_customer_id"), ["customer_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_users_customer_id_customers"),
            "customers",
            ["customer_id"],
            ["id"],
            ondelete="CASCADE",
        )

    op.create_table(
        "technician_assignments",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_technician_assignments_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_technician_assignments_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "customer_id", name=op.f("pk_technician_assignments")),
    )
    op.create_index(
        op.f("ix_technician_assignments_customer_id"), "technician_assignments", ["customer_id"], unique=False
    )

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain_seq", BigId, nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_audit_log_chain_seq"), ["chain_seq"])

    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_requested_at", Ts, nullable=True))

    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attended", sa.Boolean(), nullable=False, server_default=sa.false()))

    op.create_table(
        "remote_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("requires_consent", sa.Boolean(), nullable=False),
        sa.Column("all_commands_need_consent", sa.Boolean(), nullable=False),
        sa.Column("time_limit_s", sa.Float(), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("consent_requested_at", Ts, nullable=True),
        sa.Column("consent_command_id", sa.String(length=64), nullable=True),
        sa.Column("consent_by", sa.String(length=256), nullable=True),
        sa.Column("consent_expires_at", Ts, nullable=True),
        sa.Column("activated_at", Ts, nullable=True),
        sa.Column("expires_at", Ts, nullable=True),
        sa.Column("ended_at", Ts, nullable=True),
        sa.Column("ended_by", sa.String(length=256), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("fixed", sa.Boolean(), nullable=True),
        sa.Column("report", Json, nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_remote_sessions_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_remote_sessions_incident_id_incidents"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_sessions")),
    )
    op.create_index(
        "ix_remote_sessions_device_state", "remote_sessions", ["device_id", "state"], unique=False
    )
    op.create_index(op.f("ix_remote_sessions_incident_id"), "remote_sessions", ["incident_id"], unique=False)

    op.create_table(
        "session_timeline",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("ts", Ts, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("detail", Json, nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["remote_sessions.id"],
            name=op.f("fk_session_timeline_session_id_remote_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_timeline")),
    )
    op.create_index(op.f("ix_session_timeline_session_id"), "session_timeline", ["session_id"], unique=False)

    op.create_table(
        "guides",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fault_code", sa.String(length=256), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=True),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("steps", Json, nullable=False),
        sa.Column("customer_safe", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("retired_at", Ts, nullable=True),
        sa.Column("success_count", sa.Integer(), nullable=False),
        sa.Column("use_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guides")),
    )
    op.create_index("ix_guides_code_model", "guides", ["fault_code", "model"], unique=False)

    op.create_table(
        "guide_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("guide_id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("started_at", Ts, nullable=False),
        sa.Column("steps_done", Json, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("finished_at", Ts, nullable=True),
        sa.ForeignKeyConstraint(
            ["guide_id"], ["guides.id"], name=op.f("fk_guide_runs_guide_id_guides"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_guide_runs_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guide_runs")),
    )
    op.create_index(op.f("ix_guide_runs_incident_id"), "guide_runs", ["incident_id"], unique=False)


def downgrade() -> None:
    op.drop_table("guide_runs")
    op.drop_index("ix_guides_code_model", table_name="guides")
    op.drop_table("guides")
    op.drop_table("session_timeline")
    op.drop_table("remote_sessions")
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("attended")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested_at")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_log_chain_seq"), type_="unique")
        batch_op.drop_column("hash")
        batch_op.drop_column("chain_seq")
    op.drop_table("technician_assignments")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_users_customer_id_customers"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_users_customer_id"))
        batch_op.drop_column("disabled_at")
        batch_op.drop_column("customer_id")
        batch_op.drop_column("password_hash")
