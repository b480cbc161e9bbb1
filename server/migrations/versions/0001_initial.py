"""Initial schema: devices, messages, telemetry, events, commands, replies, users, tokens, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def Ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("first_seen", Ts(), nullable=False),
        sa.Column("last_seen", Ts(), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("status_changed_at", Ts(), nullable=True),
        sa.Column("state", sa.String(16), nullable=True),
        sa.Column("inventory", Json, nullable=True),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("serial", sa.String(256), nullable=True),
        sa.Column("firmware", sa.String(256), nullable=True),
        sa.Column("site", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
    )
    op.create_index("ix_devices_model", "devices", ["model"])
    op.create_index("ix_devices_site", "devices", ["site"])

    op.create_table(
        "messages",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("seq", BigId, nullable=False, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ts", Ts(), nullable=False),
        sa.Column("received_at", Ts(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "seq", name="pk_messages"),
    )

    op.create_table(
        "telemetry",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("ts", Ts(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_telemetry_device_id_devices", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_telemetry"),
    )
    op.create_index("ix_telemetry_device_metric_ts", "telemetry", ["device_id", "metric", "ts"])

    op.create_table(
        "events",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("seq", BigId, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("code", sa.String(256), nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("ts", Ts(), nullable=False),
        sa.Column("received_at", Ts(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("data", Json, nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_events_device_id_devices", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("device_id", "seq", name="uq_events_device_id_seq"),
    )
    op.create_index("ix_events_device_ts", "events", ["device_id", "ts"])
    op.create_index("ix_events_type", "events", ["type"])

    op.create_table(
        "commands",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("args", Json, nullable=False),
        sa.Column("issuer", sa.String(256), nullable=False),
        sa.Column("session_id", sa.String(256), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("issued_at", Ts(), nullable=False),
        sa.Column("expires_at", Ts(), nullable=False),
        sa.Column("deadline_at", Ts(), nullable=False),
        sa.Column("sent_at", Ts(), nullable=True),
        sa.Column("accepted_at", Ts(), nullable=True),
        sa.Column("finished_at", Ts(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("reason", sa.String(256), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("data", Json, nullable=True),
        sa.Column("signed", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_commands_device_id_devices", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_commands"),
    )
    op.create_index("ix_commands_device_issued", "commands", ["device_id", "issued_at"])
    op.create_index("ix_commands_state", "commands", ["state"])

    op.create_table(
        "command_replies",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("command_id", sa.String(64), nullable=False),
        sa.Column("device_seq", BigId, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("ts", Ts(), nullable=False),
        sa.Column("received_at", Ts(), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.ForeignKeyConstraint(
            ["command_id"],
            ["commands.id"],
            name="fk_command_replies_command_id_commands",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_command_replies"),
        sa.UniqueConstraint("command_id", "device_seq", name="uq_command_replies_command_id_device_seq"),
    )
    op.create_index("ix_command_replies_command_id", "command_replies", ["command_id"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", Ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", Ts(), nullable=False),
        sa.Column("expires_at", Ts(), nullable=True),
        sa.Column("revoked_at", Ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])

    op.create_table(
        "audit_log",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("ts", Ts(), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=True),
        sa.Column("detail", Json, nullable=False),
        sa.Column("result", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_ts", "audit_log", ["ts"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])


def downgrade() -> None:
    for table in (
        "audit_log",
        "api_tokens",
        "users",
        "command_replies",
        "commands",
        "events",
        "telemetry",
        "messages",
        "devices",
    ):
        op.drop_table(table)
