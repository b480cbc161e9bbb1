"""KPI report latency over a big fleet: 10,000 devices, one year, >= 500,000 incidents.

The history comes from ``server.kpi.generate`` (the generator the tests use in small) and is
written with bulk Core inserts into a fresh, migrated database on each backend. Then the
fleet-wide report and the report grouped by customer are timed for one month (the last one,
and the first one: the indexes must serve old months as well as recent ones), each the median
of a few runs, and for the whole year (one run). The target is < 1 s per report.

    python -m benchmarks.kpi [--devices 10000] [--days 365] [--db sqlite|postgres|both] [--runs 3]
                             [--keep DIR]   # keep the SQLite file there (PostgreSQL: a named
                                            # database) and reuse it next time
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import psycopg.sql
from sqlalchemy import func, select, text

from benchmarks.results import record
from server.db import create_engine, create_sessionmaker, run_migrations
from server.db.models import Incident, StateInterval
from server.kpi import GroupBy, ReportSpec, compute_report
from server.kpi.generate import FleetShape, generate
from server.kpi.incident_rollups import refresh_incident_rollups
from server.kpi.records import Dataset, insert_dataset
from server.kpi.rollups import refresh_rollups
from tests.support.databases import postgres_admin_url, sqlite_url, temporary_postgres_database

START = datetime(2026, 1, 1, tzinfo=UTC)


def _next_month(day: datetime) -> datetime:
    return datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)


def periods(days: float) -> list[tuple[str, datetime, datetime]]:
    """The last complete month of the history, its first month, all of it (a calendar year by
    default: the target's reports); then, for what partial months cost, the last four weeks (the
    dashboard's default) and the history less half a month at each end."""
    end = START + timedelta(days=days)
    month_end = datetime(end.year, end.month, 1, tzinfo=UTC)
    last = datetime(
        (month_end - timedelta(days=1)).year, (month_end - timedelta(days=1)).month, 1, tzinfo=UTC
    )
    return [
        (f"month {last:%Y-%m}", last, month_end),
        (f"month {START:%Y-%m}", START, _next_month(START)),
        (f"{days:g} days", START, end),
        ("last 4 weeks", end - timedelta(days=28), end),
        (f"{days - 30:g} days, partial ends", START + timedelta(days=15), end - timedelta(days=15)),
    ]


async def load(url: str, ds: Dataset | None, shape: FleetShape) -> tuple[int, int, float]:
    """Insert the history unless it is there already; returns (incidents, intervals, seconds)."""
    engine = create_engine(url)
    try:
        sessions = create_sessionmaker(engine)
        async with sessions() as session:
            have = await session.scalar(select(func.count()).select_from(Incident))
        took = 0.0
        if not have:
            ds = ds or generate(shape)
            started = time.perf_counter()
            async with sessions() as session:
                await insert_dataset(session, ds)
            took = time.perf_counter() - started
            async with engine.connect() as conn:  # steady state: statistics (PostgreSQL), no big WAL
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                if engine.dialect.name == "postgresql":
                    await conn.execute(text("VACUUM ANALYZE"))
                else:
                    await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        started = time.perf_counter()  # the state rollups (server/kpi/rollups.py) of new history
        async with sessions() as session:
            rebuilt = await refresh_rollups(session)
            await session.commit()
        if rebuilt:
            print(f"rollups of {rebuilt} devices built in {time.perf_counter() - started:.1f}s")
        started = time.perf_counter()  # the incident rollups (server/kpi/incident_rollups.py)
        async with sessions() as session:
            rebuilt = await refresh_incident_rollups(session)
            await session.commit()
        if rebuilt:
            print(f"incident rollups of {rebuilt} devices built in {time.perf_counter() - started:.1f}s")
            if engine.dialect.name == "postgresql":  # statistics of the new rows
                async with engine.connect() as conn:
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await conn.execute(text("ANALYZE kpi_incident_months"))
        async with sessions() as session:
            incidents = await session.scalar(select(func.count()).select_from(Incident)) or 0
            intervals = await session.scalar(select(func.count()).select_from(StateInterval)) or 0
        return incidents, intervals, took
    finally:
        await engine.dispose()


async def time_reports(url: str, days: float, runs: int) -> list[tuple[str, str, float, float, str]]:
    """(period, report, median s, min s, step breakdown of the median run). Months: one warm-up
    run, then ``runs``; the whole period (slow): one run."""
    engine = create_engine(url)
    out = []
    as_of = START + timedelta(days=days)
    try:
        sessions = create_sessionmaker(engine)
        for label, start, end in periods(days):
            for group_by in (None, GroupBy.CUSTOMER):
                spec = ReportSpec(start, end, group_by=group_by, as_of=as_of)
                timed: list[tuple[float, dict[str, float]]] = []
                for run in range(runs + 1):
                    async with sessions() as session:
                        started = time.perf_counter()
                        report = await compute_report(session, spec)
                        seconds = time.perf_counter() - started
                    if run > 0:  # the first run warms the caches
                        timed.append((seconds, report.timings))
                timed.sort(key=lambda item: item[0])
                median, steps = timed[len(timed) // 2]
                breakdown = " ".join(f"{k} {v:.2f}" for k, v in steps.items() if k != "total" and v >= 0.05)
                name = group_by.value if group_by else "fleet"
                out.append((label, name, median, timed[0][0], breakdown))
                print(f"  {label:>16} {name:>8}: median {median:.3f}s  min {timed[0][0]:.3f}s  [{breakdown}]")
    finally:
        await engine.dispose()
    return out


def kept_postgres_database(name: str) -> str:
    """The async URL of database ``name`` on the test server, created when missing."""
    admin = postgres_admin_url()
    info = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(info, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def database(backend: str, keep: Path | None, tag: str) -> Iterator[str]:
    if backend == "postgres":
        if keep is not None:  # a named database, created once and kept (drop it by hand)
            yield kept_postgres_database(f"fc_bench_kpi_{tag.replace('-', '_').replace('.', '_')}")
            return
        with temporary_postgres_database("fc_bench_kpi") as url:
            yield url
        return
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield sqlite_url(keep / f"kpi-{tag}.db")
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield sqlite_url(Path(tmp) / "kpi.db")


def _postgres_has_data(tag: str) -> bool:
    url = kept_postgres_database(f"fc_bench_kpi_{tag.replace('-', '_').replace('.', '_')}")
    info = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(info) as conn:
        table = conn.execute("SELECT to_regclass('incidents')").fetchone()
        if not (table and table[0]):
            return False
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM incidents)").fetchone()
        return bool(row and row[0])


async def main(args: argparse.Namespace) -> None:
    shape = FleetShape(
        devices=args.devices, customers=max(1, args.devices // 50), days=args.days, seed=args.seed
    )
    tag = f"{args.devices}-{args.days:g}-{args.seed}"
    ds: Dataset | None = None
    gen_seconds = 0.0
    needs_data = args.keep is None or (args.db != "postgres" and not (args.keep / f"kpi-{tag}.db").exists())
    if args.keep is not None and args.db != "sqlite" and not needs_data:
        needs_data = not await asyncio.to_thread(_postgres_has_data, tag)
    if needs_data:
        started = time.perf_counter()
        ds = generate(shape)
        gen_seconds = time.perf_counter() - started
        print(f"generated {len(ds.incidents)} incidents, {len(ds.states)} intervals in {gen_seconds:.1f}s")
    loadavg = os.getloadavg()
    lines = [
        f"{args.devices} devices, {max(1, args.devices // 50)} customers, {args.days:g} days (seed {args.seed}); "
        f"generation {gen_seconds:.1f} s. Median (min) of {args.runs} runs after one warm-up. Load average "
        f"at the start {loadavg[0]:.1f} (2 cores). Target (< 1 s): the fleet-wide and by-customer reports of "
        "the months and the whole year; the last two periods show what partial months cost.",
        "",
        "| backend | incidents | intervals | insert | report | period | median | min | steps of the median run (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    backends = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    slowest: dict[str, float] = {}
    for backend in backends:
        with database(backend, args.keep, tag) as url:
            await asyncio.to_thread(run_migrations, url)
            incidents, intervals, took = await load(url, ds, shape)
            print(f"{backend}: {incidents} incidents, {intervals} intervals, inserted in {took:.1f}s")
            for k, (label, report, median, best, steps) in enumerate(
                await time_reports(url, args.days, args.runs)
            ):
                if k < 6:  # the target's reports: months and the whole history
                    slowest[backend] = max(slowest.get(backend, 0.0), median)
                lines.append(
                    f"| {backend} | {incidents:,} | {intervals:,} | {took:.0f} s | {report} | {label} | "
                    f"{median:.3f} s | {best:.3f} s | {steps} |"
                )
    lines += [
        "",
        "Target: every fleet-wide and by-customer report of a month and of the whole year under 1 s: "
        + ", ".join(
            f"{b} slowest median {v:.3f} s ({'met' if v < 1 else 'MISSED'})" for b, v in slowest.items()
        )
        + ".",
    ]
    if args.record:
        record("benchmarks.kpi", "KPI reports over a year of fleet history", "\n".join(lines))
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=365.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep (and reuse) the SQLite database here, and PostgreSQL's as fc_bench_kpi_<shape>",
    )
    parser.add_argument(
        "--no-record", dest="record", action="store_false", help="print, do not append to RESULTS.md"
    )
    asyncio.run(main(parser.parse_args()))
