"""KPI rollups: state segments, contract months, incident months and years, and what is dirty."""

from __future__ import annotations

from sqlalchemy import (
    Float,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models.base import Base

__all__ = [
    "KpiContractMonth",
    "KpiEpisodeStart",
    "KpiIncidentDirty",
    "KpiIncidentMonth",
    "KpiIncidentYear",
    "KpiRollupDirty",
    "KpiStateSegment",
]


class KpiStateSegment(Base):
    """One piece of a device's state timeline as the KPIs see it (migration 0008): from
    ``start_s`` to the next segment's start (the last one: for ever) the instant belongs to
    precedence level ``lvl`` (1 unplanned down, 2 external down, 3 planned maintenance,
    4 running/degraded, 5 unknown), and ``c1``…``c4`` are the device's seconds at level ≤ k
    before ``start_s`` — prefix sums, so any period's state time is two lookups.
    Derived data: server/kpi/rollups.py rebuilds it from state_intervals."""

    __tablename__ = "kpi_state_segments"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    start_s: Mapped[float] = mapped_column(Float, primary_key=True)
    lvl: Mapped[int] = mapped_column(Integer)
    c1: Mapped[float] = mapped_column(Float)
    c2: Mapped[float] = mapped_column(Float)
    c3: Mapped[float] = mapped_column(Float)
    c4: Mapped[float] = mapped_column(Float)


class KpiContractMonth(Base):
    """A device's state time inside its customer's contract hours in one whole UTC month
    (migration 0012): seconds at level ≤ k (``u1``…``u4``, the levels of
    :class:`KpiStateSegment`), for a month the device spent with one customer (``customer_id``)
    whose contract hours were ``hours_key`` (their canonical JSON) when it was built. A report
    uses the row only when the device's rollup is clean, its customer at the time is the same
    and the contract hours unchanged; everything else is read from the segments. Derived data:
    server/kpi/rollups.py rebuilds it with the segments."""

    __tablename__ = "kpi_contract_months"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    month_s: Mapped[float] = mapped_column(Float, primary_key=True)
    month_e: Mapped[float] = mapped_column(Float)
    customer_id: Mapped[int] = mapped_column(Integer)
    hours_key: Mapped[str] = mapped_column(String(512))
    u1: Mapped[float] = mapped_column(Float)
    u2: Mapped[float] = mapped_column(Float)
    u3: Mapped[float] = mapped_column(Float)
    u4: Mapped[float] = mapped_column(Float)


class KpiRollupDirty(Base):
    """A device whose state intervals changed at or after ``since_s`` since its segments were
    built; written by database triggers on state_intervals (migration 0008), so every write
    path is caught. Reports read such a device raw until its rollup is refreshed."""

    __tablename__ = "kpi_rollup_dirty"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    since_s: Mapped[float] = mapped_column(Float)


class _IncidentRollupColumns:
    """The measures of :class:`KpiIncidentMonth` and :class:`KpiIncidentYear`."""

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lo_s: Mapped[float] = mapped_column(Float)
    hi_s: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    ch_auto: Mapped[int] = mapped_column(Integer)
    ch_customer: Mapped[int] = mapped_column(Integer)
    ch_remote: Mapped[int] = mapped_column(Integer)
    ch_field: Mapped[int] = mapped_column(Integer)
    avoided: Mapped[int] = mapped_column(Integer)
    ftf: Mapped[int] = mapped_column(Integer)
    n_mtrs: Mapped[int] = mapped_column(Integer)
    n_mtta: Mapped[int] = mapped_column(Integer)
    n_mttrespond: Mapped[int] = mapped_column(Integer)
    t_mtrs: Mapped[float] = mapped_column(Float)
    t_mtta: Mapped[float] = mapped_column(Float)
    t_mttrespond: Mapped[float] = mapped_column(Float)
    t_mttresolve: Mapped[float] = mapped_column(Float)
    v_mtrs: Mapped[bytes] = mapped_column()
    v_mtta: Mapped[bytes] = mapped_column()
    v_mttrespond: Mapped[bytes] = mapped_column()
    v_mttresolve: Mapped[bytes] = mapped_column()
    v_avoided: Mapped[bytes] = mapped_column()  # restore time of each dispatch avoided
    # by the month of another time (migration 0012): detected, failed (clamped t_fault), raised
    opened: Mapped[int] = mapped_column(Integer, server_default="0")
    remote: Mapped[int] = mapped_column(Integer, server_default="0")
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    repeats: Mapped[int] = mapped_column(Integer, server_default="0")
    episodes: Mapped[int] = mapped_column(Integer, server_default="0")
    transients: Mapped[int] = mapped_column(Integer, server_default="0")
    # MTRS per episode (migration 0014): the restore time of each failure episode restored in the
    # month (by the month of its restore), float64 bytes like the others; None in older rows
    v_mtrs_episode: Mapped[bytes | None] = mapped_column()


class KpiIncidentMonth(_IncidentRollupColumns, Base):
    """What a report needs of one device's incidents in one UTC month (``month_s``): of those
    resolved in it, counts and sums of the ``resolved`` step and each duration population as
    float64 bytes (``array('d')``), so exact percentiles merge months without reading
    incidents; of those detected / failing in it, the counts of the ``counts`` and ``episodes``
    steps; its transient faults. ``lo_s``/``hi_s`` bound the clamped t_fault (raised time) of
    all of them: a report uses the row only when both fall in one customer/site period of the
    device. Built by :mod:`server.kpi.incident_rollups`."""

    __tablename__ = "kpi_incident_months"
    __table_args__ = (Index("ix_kpi_incident_months_month", "month_s"),)

    month_s: Mapped[float] = mapped_column(Float, primary_key=True)


class KpiIncidentYear(_IncidentRollupColumns, Base):
    """The twelve :class:`KpiIncidentMonth` rows of one device and UTC year (``year_s``) in
    one (migration 0012): a report over whole calendar years reads one row per device and
    year where the device had one customer/site period throughout."""

    __tablename__ = "kpi_incident_years"

    year_s: Mapped[float] = mapped_column(Float, primary_key=True)


class KpiEpisodeStart(Base):
    """A failure that begins a failure episode (it starts at or after every earlier failure of
    its device ended), so a report reading a few incidents raw need not read the device's
    history before them (migration 0012). Built with the incident rollups; a report trusts it
    only for devices that are not dirty."""

    __tablename__ = "kpi_episode_starts"

    incident_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)


class KpiIncidentDirty(Base):
    """A device whose incidents changed since its :class:`KpiIncidentMonth` rows were built;
    written by triggers on incidents (migration 0011). Reports read such a device raw."""

    __tablename__ = "kpi_incident_dirty"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
