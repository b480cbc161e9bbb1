"""incidents: repeat failures (``incidents.repeat_of``), failure episodes as rows
(``incident_episodes``, filled from ``incidents.episodes``) and MTRS per episode in the
incident rollups (issue 15)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 00:30:00.000000
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ROLLUPS = ("kpi_incident_months", "kpi_incident_years")
_FK = "fk_incidents_repeat_of_incidents"
# as migration 0011's on incidents: a write to an episode marks its device's rollup dirty
_SQLITE_TRIGGERS = {
    "insert": ("INSERT", ["NEW.device_id"]),
    "delete": ("DELETE", ["OLD.device_id"]),
    "update": ("UPDATE", ["OLD.device_id", "NEW.device_id"]),
}
_BATCH = 1000


def _sqlite() -> bool:
    return bool(op.get_bind().dialect.name == "sqlite")


def _sqlite_triggers(table: str, prefix: str) -> None:
    for name, (event, devices) in _SQLITE_TRIGGERS.items():
        inserts = " ".join(
            f"INSERT INTO kpi_incident_dirty (device_id) VALUES ({device}) ON CONFLICT (device_id) DO NOTHING;"  # noqa: S608 - fixed names
            for device in devices
        )
        op.execute(
            f"CREATE TRIGGER {prefix}_{name} AFTER {event} ON {table} FOR EACH ROW BEGIN {inserts} END"
        )


def _incident_triggers() -> None:
    """Migration 0011's triggers on incidents, again after SQLite copied the table."""
    for name in _SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS kpi_incident_dirty_{name}")
    _sqlite_triggers("incidents", "kpi_incident_dirty")


def _spans(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str | bytes):
        value = json.loads(value)
    return list(value or [])


def _fill_episodes() -> None:
    """One row per span of every incident's ``episodes`` (what sync.py writes from now on)."""
    bind = op.get_bind()
    episodes = sa.table(
        "incident_episodes",
        *(
            sa.column(name)
            for name in ("incident_id", "device_id", "seq", "fault_s", "detect_s", "restored_s")
        ),
    )
    last = -1
    while True:
        batch = bind.execute(
            sa.text("SELECT id, device_id, episodes FROM incidents WHERE id > :last ORDER BY id LIMIT :n"),
            {"last": last, "n": _BATCH},
        ).all()
        if not batch:
            return
        rows = [
            {
                "incident_id": incident_id,
                "device_id": device_id,
                "seq": seq,
                "fault_s": float(span["start_s"]),
                "detect_s": float(span["start_s"] if span.get("detect_s") is None else span["detect_s"]),
                "restored_s": None if span.get("end_s") is None else float(span["end_s"]),
            }
            for incident_id, device_id, value in batch
            for seq, span in enumerate(_spans(value))
        ]
        if rows:
            bind.execute(episodes.insert(), rows)
        last = batch[-1][0]


def upgrade() -> None:
    if _sqlite():  # a foreign key: the table is copied (foreign keys are off here), triggers too
        with op.batch_alter_table("incidents", recreate="always") as batch:
            batch.add_column(sa.Column("repeat_of", sa.Integer(), nullable=True))
            batch.create_foreign_key(_FK, "incidents", ["repeat_of"], ["id"], ondelete="SET NULL")
        _incident_triggers()
    else:
        op.add_column("incidents", sa.Column("repeat_of", sa.Integer(), nullable=True))
        op.create_foreign_key(_FK, "incidents", "incidents", ["repeat_of"], ["id"], ondelete="SET NULL")
    op.create_index("ix_incidents_repeat_of", "incidents", ["repeat_of"])
    op.create_table(
        "incident_episodes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("fault_s", sa.Float(), nullable=False),
        sa.Column("detect_s", sa.Float(), nullable=False),
        sa.Column("restored_s", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_episodes_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_episodes")),
    )
    op.create_index("ix_incident_episodes_incident_id", "incident_episodes", ["incident_id"])
    op.create_index("ix_incident_episodes_restored", "incident_episodes", ["restored_s"])
    for table in _ROLLUPS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("v_mtrs_episode", sa.LargeBinary(), nullable=True))
    _fill_episodes()
    if _sqlite():
        _sqlite_triggers("incident_episodes", "kpi_episode_dirty")
    else:  # the function of migration 0011 reads only OLD/NEW.device_id
        op.execute(
            "CREATE TRIGGER kpi_episode_dirty AFTER INSERT OR UPDATE OR DELETE ON incident_episodes "
            "FOR EACH ROW EXECUTE FUNCTION kpi_mark_incident_dirty()"
        )
    # every existing rollup row lacks MTRS per episode: read raw until rebuilt
    op.execute(
        "INSERT INTO kpi_incident_dirty (device_id) SELECT DISTINCT device_id FROM incidents "
        "WHERE device_id NOT IN (SELECT device_id FROM kpi_incident_dirty)"
    )


def downgrade() -> None:
    if _sqlite():
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS kpi_episode_dirty_{name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS kpi_episode_dirty ON incident_episodes")
    for table in _ROLLUPS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("v_mtrs_episode")
    op.drop_index("ix_incident_episodes_restored", table_name="incident_episodes")
    op.drop_index("ix_incident_episodes_incident_id", table_name="incident_episodes")
    op.drop_table("incident_episodes")
    op.drop_index("ix_incidents_repeat_of", table_name="incidents")
    if _sqlite():  # as in upgrade: the table is copied
        with op.batch_alter_table("incidents", recreate="always") as batch:
            batch.drop_column("repeat_of")
        _incident_triggers()
    else:
        op.drop_constraint(_FK, "incidents", type_="foreignkey")
        op.drop_column("incidents", "repeat_of")
