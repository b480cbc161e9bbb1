"""``fleetcare kpi``: downtime and service KPIs from the fleet database, in the terminal.

fleetcare kpi report --from 2026-01-01 --to 2026-02-01 [--by customer] [--csv]
                     [--config server.toml | --database-url URL]
fleetcare kpi definitions
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from server.errors import ServerError
from server.kpi.definitions import COLUMNS
from server.kpi.export import check_period, human, parse_time, report_csv, report_json
from server.kpi.report import GroupBy, Report, ReportSpec

__all__ = ["app"]

app = typer.Typer(
    help="Downtime and service KPIs (definitions: docs/kpis.md).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

TRANSPOSE_UP_TO = 6

# the columns of a report with many rows in the terminal, with short headers (--csv has them all)
SUMMARY = {
    "devices": "dev",
    "availability": "avail",
    "coverage": "cover",
    "downtime_s": "down",
    "mtbf_s": "MTBF",
    "mtrs_episode_mean_s": "MTRS/ep",
    "mtrs_mean_s": "MTRS/inc",
    "mtrs_p90_s": "MTRS/inc p90",
    "resolved": "resolved",
    "self_resolution_rate": "self-res",
    "dispatch_rate": "dispatch",
    "dispatches_avoided": "avoided",
    "downtime_avoided_s": "down avoided",
    "first_time_fix_rate": "FTF",
    "open_at_end": "open",
    "kb_link_rate": "KB link",
    "kb_reuse_rate": "KB reuse",
    "kb_suggestion_hit5": "KB hit@5",
}


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _database_url(config: Path | None, database_url: str | None) -> str:
    if database_url:
        return database_url
    from server.settings import load_settings  # noqa: PLC0415 - only when no URL is given

    # only the database is needed: the MQTT section is not checked
    return load_settings(config, connects=False).database_url


def _baseline_hours(given: float | None, config: Path | None) -> float:
    if given is not None:
        return given
    from server.settings import KpiSettings, load_settings  # noqa: PLC0415 - only when needed

    if config is None:
        return KpiSettings().baseline_restore_hours
    return load_settings(config, connects=False).kpi.baseline_restore_hours


_DATABASE_HINT = "give --database-url URL or --config server.toml, or set FLEETCARE_DATABASE_URL"


async def _report(url: str, spec: ReportSpec, engine_name: str, customer: str | None) -> Report:
    """The report over the database at ``url``, which must exist already (a report never
    creates or migrates one); ``customer`` is a name or an id, as for ``create-user``."""
    from server.base.users import resolve_customer  # noqa: PLC0415 - lazy
    from server.db import create_engine, create_sessionmaker  # noqa: PLC0415
    from server.db.existing import require_database  # noqa: PLC0415
    from server.kpi.query import compute_report  # noqa: PLC0415
    from server.kpi.records import load_dataset  # noqa: PLC0415
    from server.kpi.reference import reference_report  # noqa: PLC0415

    await asyncio.to_thread(require_database, url, hint=_DATABASE_HINT)
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            if customer is not None:
                spec = dataclasses.replace(spec, customer=(await resolve_customer(session, customer)).id)
            if engine_name == "reference":
                return reference_report(await load_dataset(session), spec)
            return await compute_report(session, spec)
    finally:
        await engine.dispose()


def _period_title(report: Report) -> str:
    period = report.as_dict()["period"]
    cut = "" if period["until"] == period["to"] else f" (cut at {period['until']})"
    by = f", by {report.spec.group_by.value}" if report.spec.group_by else ""
    filters = "".join(f", {k}={v}" for k, v in report.spec.filters().items())
    return f"KPIs [{period['from']}, {period['to']}){cut}{by}{filters}"


def render(report: Report, console: Console) -> None:
    """Up to six rows: every KPI, one column per row. More: the main KPIs, one line per row."""
    console.print(Text(_period_title(report), style="bold"))
    if not report.rows:
        console.print("no rows: the period has not started yet")
        return
    if len(report.rows) <= TRANSPOSE_UP_TO:
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("KPI")
        for row in report.rows:
            table.add_column(row.label, justify="right")
        for kpi in COLUMNS:
            if kpi.name not in ("mtbf_censored", "mtbf_lower_bound_s"):
                table.add_row(
                    kpi.label, *(human(kpi.name, row.values[kpi.name], row.values) for row in report.rows)
                )
        console.print(table)
        return
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption="--csv: every KPI; `fleetcare kpi definitions`: what they mean",
    )
    table.add_column(report.spec.group_by.value if report.spec.group_by else "group", no_wrap=True)
    for header in SUMMARY.values():
        table.add_column(header, justify="right", no_wrap=True)
    for row in report.rows:
        table.add_row(
            row.label, *(human(name, row.values[name], row.values, compact=True) for name in SUMMARY)
        )
    console.print(table)


@app.command()
def report(
    *,
    from_: Annotated[str, typer.Option("--from", help="Period start (inclusive), e.g. 2026-01-01 (UTC).")],
    to: Annotated[str, typer.Option("--to", help="Period end (exclusive).")],
    by: Annotated[GroupBy | None, typer.Option("--by", help="Group by this.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer (name or id).")] = None,
    site: Annotated[int | None, typer.Option(help="Only this site id.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    fault_code: Annotated[str | None, typer.Option("--fault-code", help="Only this fault code.")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Cut the period here (default: now).")] = None,
    baseline_restore_hours: Annotated[
        float | None,
        typer.Option(
            "--baseline-restore-hours",
            min=0,
            help="Baseline restore time for 'downtime avoided' (default: [kpi] in --config, else 8).",
        ),
    ] = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV with every KPI column on stdout.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON (as the API) on stdout.")] = False,
    engine: Annotated[
        str, typer.Option(help="sql (fast) or reference (recomputes in Python from every row).")
    ] = "sql",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Server TOML settings file.")] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="Database URL (instead of --config).")
    ] = None,
) -> None:
    """Every KPI over the half-open period [--from, --to), optionally grouped and filtered."""
    if engine not in ("sql", "reference"):
        raise _fail(f"--engine: {engine!r} is not one of sql, reference")
    try:
        start, end = parse_time(from_, "--from"), parse_time(to, "--to")
        check_period(start, end)
        spec = ReportSpec(
            start=start,
            end=end,
            group_by=by,
            site=site,
            model=model,
            fault_code=fault_code,
            as_of=parse_time(as_of, "--as-of") if as_of else None,
            baseline_restore_s=3600.0 * _baseline_hours(baseline_restore_hours, config),
        )
        result = asyncio.run(_report(_database_url(config, database_url), spec, engine, customer))
    except ServerError as exc:
        raise _fail(exc.message) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise _fail(f"database: {exc}") from exc
    if csv:
        typer.echo(report_csv(result), nl=False)
    elif as_json:
        typer.echo(json.dumps(report_json(result), indent=2))
    else:
        render(result, Console())


@app.command()
def definitions(
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Every KPI with its exact definition."""
    if as_json:
        body: dict[str, Any] = {
            k.name: {"label": k.label, "unit": k.unit, "definition": k.definition} for k in COLUMNS
        }
        typer.echo(json.dumps(body, indent=2))
        return
    table = Table(show_lines=True)
    table.add_column("KPI")
    table.add_column("unit")
    table.add_column("definition")
    for kpi in COLUMNS:
        table.add_row(f"{kpi.label}\n[dim]{kpi.name}[/dim]", kpi.unit, kpi.definition)
    Console().print(table)


if __name__ == "__main__":
    app()
